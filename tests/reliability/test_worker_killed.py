"""Worker killed: SIGKILL Ray worker processes while they run batches of a real sweep."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest

from sweeps.run.runner import RunOptions, run_sweep

from rel_helpers import assert_exactly_once, handa_sweep, read_keys_everywhere

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPLICATES = 16
ROWS = 2 * 2 * REPLICATES


def _cmdline(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _busy_workers(temp_dir: str) -> list[int]:
    """Pids of *our* Ray workers executing a batch right now (Ray titles them ray::<task>).

    The machine is shared: only workers whose raylet runs in this session's temp dir count.
    """
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        if _cmdline(d).startswith("ray::_remote_batch") and temp_dir in _cmdline(_parent(d)):
            out.append(int(d))
    return out


class _Killer(threading.Thread):
    """Kills `times` busy workers, one at a time, while the sweep runs."""

    def __init__(self, times: int, temp_dir: str) -> None:
        super().__init__(daemon=True)
        self.temp_dir = temp_dir
        self.times = times
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.times and not self.stop.is_set():
            busy = [p for p in _busy_workers(self.temp_dir) if p not in self.killed]
            if busy:
                time.sleep(0.2)  # mid-batch, not at its first instruction
                try:
                    os.kill(busy[0], signal.SIGKILL)
                    self.killed.append(busy[0])
                except ProcessLookupError:
                    continue
                time.sleep(1.0)
            else:
                time.sleep(0.02)


def _outcomes(root):
    cols = ["policy", "cell_id", "replicate", "seed", "status", "lockup", "max_stall_s", "kills", "sim_events"]
    df = pd.read_parquet(root, columns=cols)
    df["policy"] = df["policy"].astype(str)
    return df.sort_values(["cell_id", "policy", "replicate"]).reset_index(drop=True)


def test_sigkill_ray_workers_mid_sweep(tmp_path, ray_session):
    path = handa_sweep(tmp_path, "workers", replicates=REPLICATES, output=str(tmp_path / "results"))
    assert ray_session._temp_dir, "the session's Ray must be the embedded one"
    killer = _Killer(times=2, temp_dir=ray_session._temp_dir)
    killer.start()
    try:
        # small batches so the sweep spans several of them and a kill lands mid-sweep
        res = run_sweep(path, RunOptions(no_mlflow=True, workers=2, target_batch_s=0.2))
    finally:
        killer.stop.set()
        killer.join(10)
    assert killer.killed, "no busy Ray worker was found to kill"
    assert res.exit_code == 0 and res.rows_lost == 0
    df = read_keys_everywhere(tmp_path / "results", "workers")
    assert_exactly_once(df, ROWS)
    assert set(df["status"]) == {"ok"}

    # identical to an undisturbed run with the same seed
    clean = handa_sweep(tmp_path, "workers", replicates=REPLICATES, output=str(tmp_path / "clean"))
    assert run_sweep(clean, RunOptions(executor="serial", no_mlflow=True)).exit_code == 0
    pd.testing.assert_frame_equal(
        _outcomes(tmp_path / "results" / "sweep=workers"), _outcomes(tmp_path / "clean" / "sweep=workers")
    )

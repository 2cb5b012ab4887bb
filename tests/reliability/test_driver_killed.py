"""Driver killed: SIGKILL `oomsweep run` at random points, read what it left, rerun to completion."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sweeps.run.runner import RunOptions, run_sweep

from rel_helpers import assert_exactly_once, handa_sweep, oomsweep_cmd, read_keys_everywhere, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPLICATES = 12
ROWS = 2 * 2 * REPLICATES


def _parquet_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.parquet") if not p.name.startswith(".")]


def _kill_mid_sweep(cmd: list[str], cwd: Path, out: Path, rng: random.Random) -> bool:
    """Start the run, wait until it has stored something, SIGKILL it after a random delay.

    Returns True if the process was still running when killed.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = len(_parquet_files(out)) if out.exists() else 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and len(_parquet_files(out)) > before:
            break
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.8))
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return alive


def test_sigkill_driver_repeatedly_then_rerun(tmp_path):
    rng = random.Random(int(os.environ.get("OOMSWEEP_TEST_SEED", "20181114")))
    path = handa_sweep(tmp_path, "killme", replicates=REPLICATES)
    out = tmp_path / "results"
    sweep_root = out / "sweep=killme"
    # --flush-seconds 0: a file per batch, so kills often land in the middle of a write
    cmd = oomsweep_cmd("run", str(path), "--serial", "--no-mlflow", "--flush-seconds", "0")
    hits = 0
    for _ in range(3):
        hits += _kill_mid_sweep(cmd, tmp_path, out, rng)
        if sweep_root.exists() and _parquet_files(sweep_root):
            df = read_keys_everywhere(out, "killme")  # pyarrow, pandas, DuckDB: none fails
            assert_exactly_once(df, len(df))
            assert len(df) <= ROWS
    assert hits >= 1, "the driver finished before any kill: the sweep is too short to test this"

    # What a write cut short leaves behind: a footer-less file under the .tmp name.
    some = _parquet_files(sweep_root)[0]
    planted = some.parent / ".part-0-deadbeef.parquet.tmp"
    planted.write_bytes(some.read_bytes()[: some.stat().st_size // 2])
    read_keys_everywhere(out, "killme")  # invisible to every reader

    # A rerun (on real Ray this time) cleans the leftovers and completes every row exactly once.
    p = subprocess.run(oomsweep_cmd("run", str(path), "--no-mlflow", "--workers", "2"), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert "unfinished .tmp file" in p.stderr
    assert not [f for f in sweep_root.rglob("*") if f.name.endswith(".tmp")]
    assert "Traceback" not in p.stderr
    df = read_keys_everywhere(out, "killme")
    assert_exactly_once(df, ROWS)

    # and the rows are the ones an undisturbed run computes (seeds depend on the row only)
    clean = handa_sweep(tmp_path, "killme", replicates=REPLICATES, output=str(tmp_path / "clean"))
    assert run_sweep(clean, RunOptions(executor="serial", no_mlflow=True)).exit_code == 0
    import pandas as pd

    cols = ["cell_id", "replicate", "seed", "lockup", "max_stall_s", "kills", "sim_events"]
    a = pd.read_parquet(sweep_root, columns=["policy", *cols])
    b = pd.read_parquet(tmp_path / "clean" / "sweep=killme", columns=["policy", *cols])
    for d in (a, b):
        d["policy"] = d["policy"].astype(str)
    key = ["cell_id", "policy", "replicate"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key + cols[2:]], b[key + cols[2:]])


def test_a_second_run_of_the_same_sweep_is_refused_while_the_first_holds_it(tmp_path, run_cli):
    """Two drivers on one sweep would compute rows twice; the lock dies with its holder (SIGKILL)."""
    from sweeps.storage.lock import SweepLock

    path = handa_sweep(tmp_path, "locked", replicates=1)
    holder = subprocess.Popen(
        [os.sys.executable, "-c",
         "import sys, time; from sweeps.storage.lock import SweepLock; SweepLock(sys.argv[1], 'locked').acquire(); "
         "print('held', flush=True); time.sleep(600)", str(tmp_path / "results")],
        stdout=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    assert holder.stdout.readline().strip() == "held"
    p = run_cli("run", str(path), "--serial", "--no-mlflow")
    assert p.returncode == 2 and "another oomsweep run is writing sweep 'locked'" in p.stderr
    assert "Traceback" not in p.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    with SweepLock(tmp_path / "results", "locked"):  # free again once the holder is dead
        pass
    p = run_cli("run", str(path), "--serial", "--no-mlflow")
    assert p.returncode == 0, p.stderr

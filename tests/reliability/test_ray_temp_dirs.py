"""Ray temp dirs of killed drivers: a SIGKILLed `oomsweep run` leaves its private Ray temp dir
behind (nothing of it runs any more); the next run removes it, and only it: a dir whose owner
process is alive, and a dir without an owner file, are kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rel_helpers import handa_sweep, oomsweep_cmd, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _processes_naming(path: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_temp_dir_of_a_killed_driver_is_removed_by_the_next_run(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="r10ray-", dir="/tmp"))  # short: Ray's unix socket paths
    env = subprocess_env(OOMSWEEP_RAY_TEMP_BASE=str(base))
    sleeper = None
    try:
        path = handa_sweep(tmp_path, "long", replicates=200, output=str(tmp_path / "results"))
        proc = subprocess.Popen(oomsweep_cmd("run", str(path), "--no-mlflow", "--workers", "1"), cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list(base.glob("oomsw-*/session_latest")):
            assert proc.poll() is None, "the run ended before Ray started"
            time.sleep(0.2)
        (dead,) = base.glob("oomsw-*")
        assert (dead / "oomsweep.owner").read_text().split()[0] == str(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60  # Ray's own processes follow their driver
        while _processes_naming(dead) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert dead.is_dir() and not _processes_naming(dead)

        # a dir whose owner is alive, and one without an owner file: not ours to remove
        sleeper = subprocess.Popen(["sleep", "600"])
        live = base / "oomsw-live"
        live.mkdir()
        start = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (live / "oomsweep.owner").write_text(f"{sleeper.pid} {start}\n")
        unknown = base / "oomsw-unknown"
        unknown.mkdir()
        # a dir whose pid was reused by another process: the start time tells them apart
        reused = base / "oomsw-reused"
        reused.mkdir()
        (reused / "oomsweep.owner").write_text(f"{sleeper.pid} 1\n")

        small = handa_sweep(tmp_path, "small", replicates=1, output=str(tmp_path / "results"))
        p = subprocess.run(oomsweep_cmd("run", str(small), "--no-mlflow", "--workers", "1"), cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert not dead.exists() and not reused.exists()
        assert live.is_dir() and unknown.is_dir()
        assert sorted(x.name for x in base.iterdir()) == ["oomsw-live", "oomsw-unknown"]  # its own dir too is gone
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for pid in _processes_naming(base):  # only Ray processes of this test's own temp dirs
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(base, ignore_errors=True)

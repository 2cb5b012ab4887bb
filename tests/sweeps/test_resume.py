"""Ctrl-C a real `oomsweep run` subprocess mid-sweep, run it again: every row exactly once."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sweeps.storage import dataset as storage
from sweeps.run.runner import RunOptions, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CELLS, POLICIES, REPLICATES = 2, 2, 60
TOTAL = CELLS * POLICIES * REPLICATES


def _wait_for_rows(proc: subprocess.Popen, lines: list[str], deadline: float) -> int:
    """Read the child's stderr until its progress line reports some rows done."""
    pattern = re.compile(r"oomsweep: (\d+)/(\d+) rows")
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        m = pattern.search(line)
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    raise AssertionError("no progress from the sweep:\n" + "".join(lines))


def test_sigint_then_resume_gives_every_row_exactly_once(ray_session, write_sweep, tmp_path):
    path = write_sweep(tmp_path, name="resume", replicates=REPLICATES)
    env = {**os.environ, "OOMSWEEP_PROGRESS_SECONDS": "0.2", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(path), "--no-mlflow", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        _wait_for_rows(proc, lines, time.monotonic() + 180)
        proc.send_signal(signal.SIGINT)
        rest_out, rest_err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines) + rest_err
    assert proc.returncode == 130, err
    assert "resume with: oomsweep run" in err

    output = tmp_path / "results"
    first = storage.read_sweep(output, "resume")
    assert 0 < len(first) < TOTAL, f"{len(first)} rows stored before the interrupt"
    assert not first.duplicated(["cell_id", "policy", "replicate"]).any()
    assert not list(output.rglob("*.tmp"))  # no half-written file left behind

    res = run_sweep(tmp_path / "resume.yaml", RunOptions(output=str(output), no_mlflow=True),
                    stdout=io.StringIO(), stderr=io.StringIO())
    assert res.exit_code == 0
    assert res.rows_stored_before == len(first)
    assert res.rows_run == TOTAL - len(first)
    both = storage.read_sweep(output, "resume")
    assert len(both) == TOTAL
    assert not both.duplicated(["cell_id", "policy", "replicate"]).any()
    assert both.groupby(["cell_id", "policy"])["replicate"].apply(lambda r: sorted(r) == list(range(REPLICATES))).all()
    assert both["execution_id"].nunique() == 2

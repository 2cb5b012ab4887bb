"""MLflow down: a real `mlflow server` absent at start, then killed mid-sweep; `oomsweep log` backfills."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rel_helpers import assert_exactly_once, handa_sweep, oomsweep_cmd, read_keys_everywhere, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MLFLOW = Path(sys.executable).parent / "mlflow"
FAILED = "MLflow tracking failed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1 with a SQLite store that outlives restarts."""

    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        (self.data / "artifacts").mkdir(parents=True, exist_ok=True)
        log = open(self.data / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.data}/mlflow.db", "--serve-artifacts",
             "--artifacts-destination", str(self.data / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mlflow server did not come up:\n" + (self.data / "server.log").read_text()[-3000:])
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its uvicorn worker
            self.proc.wait(30)


def _runs(url: str) -> tuple[int, int]:
    """(parent runs, all runs) in the store."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=url)
    ids = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(ids, max_results=5000) if ids else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return len(parents), len(runs)


def test_mlflow_absent_then_killed_then_backfilled(tmp_path):
    port = _free_port()
    server = Server(tmp_path / "mlflow-data", port)
    uri = server.url
    env = subprocess_env()
    out = tmp_path / "results"

    # 1. The server is not running when the sweep starts.
    a = handa_sweep(tmp_path, "nomlflow", replicates=3)
    p = subprocess.run(oomsweep_cmd("run", str(a), "--serial", "--mlflow-uri", uri), cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr  # documented: tracking failure never fails the sweep
    assert p.stderr.count(FAILED) == 1, p.stderr
    assert f"oomsweep log {out.name} --sweep nomlflow --mlflow-uri {uri}" in p.stderr
    assert "Traceback" not in p.stderr
    assert_exactly_once(read_keys_everywhere(out, "nomlflow"), 12)

    try:
        # 2. The server is up at the start and killed in the middle of the sweep.
        server.start()
        b = handa_sweep(tmp_path, "midkill", replicates=10)
        proc = subprocess.Popen(oomsweep_cmd("run", str(b), "--serial", "--flush-seconds", "0", "--mlflow-uri", uri),
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list((out / "sweep=midkill").rglob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before the server could be killed"
        server.kill()
        so, se = proc.communicate(timeout=180)
        assert proc.returncode == 0, se
        assert se.count(FAILED) == 1, se
        assert "Traceback" not in se
        assert_exactly_once(read_keys_everywhere(out, "midkill"), 40)

        # 3. Back up (same store): `oomsweep log` backfills both executions ...
        server.start()
        assert _runs(uri)[0] == 0
        p = subprocess.run(oomsweep_cmd("log", str(out), "--mlflow-uri", uri), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        assert p.stdout.count(": logged") == 2, p.stdout
        parents, total = _runs(uri)
        assert parents == 2 and total > 2

        # 4. ... and a second `log` is a no-op.
        p = subprocess.run(oomsweep_cmd("log", str(out), "--mlflow-uri", uri), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("already logged") == 2 and ": logged" not in p.stdout, p.stdout
        assert _runs(uri) == (parents, total)
    finally:
        server.kill()

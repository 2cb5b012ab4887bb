"""Start and stop a real `mlflow ui` on 127.0.0.1 (a free port) for the UI tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

UI_START_S = 240.0  # `mlflow ui` imports a lot; on a loaded 2-core machine it took 60 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_ui(backend_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow ui` exactly as the README starts it (one worker: the test is one browser)."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "ui", "--backend-store-uri", backend_uri, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + UI_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow ui did not answer on {base} within {UI_START_S:.0f} s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

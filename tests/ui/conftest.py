"""A real `mlflow ui` on 127.0.0.1 and Debian's headless Chromium driven by Playwright.

Chromium is the apt package `chromium` (/usr/bin/chromium); Playwright comes from PyPI and never
downloads a browser. Without chromium or playwright the UI tests skip, except under CI (`CI` set),
where `.ci/run` installs both and a missing one is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("OOMSWEEP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_START_S = 240.0  # `mlflow ui` imports a lot; on a loaded 2-core machine it took 60 s


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI installs it (.ci/run), so this is a failure, not a skip")
    pytest.skip(reason)


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


@pytest.fixture(scope="session")
def browser():
    """open_page(url) -> a Playwright page on Debian's chromium, in a fresh profile each time (a
    first visit: no localStorage, no saved UI state)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    contexts, profiles = [], []
    with sync_playwright() as p:

        def open_page(url: str, timeout_s: float = 180.0):
            profile = tempfile.mkdtemp(prefix="oomsweep-chromium-")
            profiles.append(profile)
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1600, "height": 1000})
            contexts.append(ctx)
            # Nothing beyond 127.0.0.1: any other request is refused before it leaves the browser.
            ctx.route("**/*", lambda route: route.continue_()
                      if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else route.abort())
            page = ctx.new_page()
            page.set_default_timeout(timeout_s * 1000)
            page.goto(url)
            return page

        try:
            yield open_page
        finally:
            for ctx in contexts:
                ctx.close()
            for profile in profiles:
                shutil.rmtree(profile, ignore_errors=True)

"""A real `mlflow ui` on 127.0.0.1 and Debian's headless Chromium driven by Playwright.

Chromium is the apt package `chromium` (/usr/bin/chromium); Playwright comes from PyPI and never
downloads a browser. Without chromium or playwright the UI tests skip, except under CI (`CI` or
OOMSWEEP_REQUIRE_CHROMIUM set; `.ci/run` installs both and sets the latter): then it is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("OOMSWEEP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("OOMSWEEP_REQUIRE_CHROMIUM"):
        pytest.fail(f"{reason}; CI installs it (.ci/run), so this is a failure, not a skip")
    pytest.skip(reason)


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
                viewport={"width": 2400, "height": 1100})
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

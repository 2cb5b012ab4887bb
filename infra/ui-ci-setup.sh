#!/usr/bin/env bash
# Install what tests/ui needs from Debian: the `chromium` package (/usr/bin/chromium), which
# Playwright (from the test extra) drives headless; Playwright never downloads a browser here.
# Idempotent: does nothing when chromium is present. Needs root (or passwordless sudo) and apt.
# Usage: infra/ui-ci-setup.sh        (called by .ci/run before pytest)
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "ui-ci-setup: chromium already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ui-ci-setup: need root to install chromium; under CI the UI tests will then fail" >&2
        exit 0
    fi
fi
# another apt/dpkg may hold the lock (other jobs on the machine): wait for it
for _ in $(seq 1 60); do
    if $SUDO apt-get install -y --no-install-recommends chromium; then
        exit 0
    fi
    sleep 10
done
echo "ui-ci-setup: could not install chromium" >&2
exit 1

#!/usr/bin/env bash
# Install what the infra integration tests need from Debian: sshd (for `ray up`/`ray submit` against
# 127.0.0.1 with the local provider) and rsync (what `ray submit`/`ray rsync-up` copy files with).
# Idempotent: does nothing when both are present.  Needs root (or passwordless sudo) and apt.
# Usage: infra/ci-setup.sh            (called by .ci/run before pytest)
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)

if [ "${#need[@]}" -eq 0 ]; then
    echo "ci-setup: openssh-server and rsync already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ci-setup: need root to install ${need[*]}; the integration tests that need them will be skipped" >&2
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci-setup: no apt-get; install ${need[*]} yourself (the tests that need them will be skipped)" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Unique package names, then one quiet install; no service is started (the tests run their own sshd).
mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "ci-setup: installed ${pkgs[*]}"

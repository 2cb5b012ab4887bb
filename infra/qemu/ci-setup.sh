#!/usr/bin/env bash
# Install what the QEMU calibration harness needs and fetch Debian bookworm's 6.1 kernel into a
# cache folder (never into /boot). Idempotent: a second run with a cached kernel does no downloads.
#   OOMSWEEP_KERNEL_CACHE  cache dir (default ~/.cache/oomsweep/kernel)
#   OOMSWEEP_KERNEL_PKG    exact package (default: newest linux-image-6.1.0-NN-amd64 the registry serves)
set -euo pipefail

CACHE="${OOMSWEEP_KERNEL_CACHE:-$HOME/.cache/oomsweep/kernel}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh && file -L /bin/busybox 2>/dev/null | grep -q static \
    || need+=(busybox-static)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v cpio >/dev/null || need+=(cpio)
command -v file >/dev/null || need+=(file)
if [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then need+=(libc6-dev); fi

if [ "$(ls "$CACHE"/vmlinuz-* 2>/dev/null | head -1)" = "" ] || [ "${#need[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
fi
if [ "${#need[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$CACHE"
if ls "$CACHE"/vmlinuz-* >/dev/null 2>&1; then
    echo "kernel cached: $(ls "$CACHE"/vmlinuz-* | head -1)"
    exit 0
fi

pkg="${OOMSWEEP_KERNEL_PKG:-}"
if [ -z "$pkg" ]; then
    pkg="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' \
        | awk '{print $1}' | sort -t- -k4,4n | tail -1)"
fi
[ -n "$pkg" ] || { echo "ci-setup: no linux-image-6.1.0-NN-amd64 package found" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "$pkg" >/dev/null)
dpkg -x "$tmp"/*.deb "$tmp/root"
vmlinuz="$(ls "$tmp"/root/boot/vmlinuz-* | head -1)"
cp "$vmlinuz" "$CACHE/"
cp "$tmp"/root/boot/config-* "$CACHE/" 2>/dev/null || true
echo "$pkg" > "$CACHE/PACKAGE"
echo "kernel fetched: $CACHE/$(basename "$vmlinuz") ($pkg)"

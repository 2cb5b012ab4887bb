#!/usr/bin/env bash
# Build the calibration initramfs base: static busybox, /init and the static reproducer, as an
# uncompressed newc cpio.  Per-run settings (/oomrepro.conf) are appended by sweeps/calibrate/qemu.py as a
# second cpio archive (the kernel unpacks concatenated archives in order).
# Usage: build-initramfs.sh OUT.cpio     (rebuilds only when a source changed)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build-initramfs.sh OUT.cpio}"
busybox="${BUSYBOX:-/bin/busybox}"
file -L "$busybox" | grep -q 'statically linked' || { echo "build-initramfs: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; }
stamp="$(cat "$here/src/oomrepro.c" "$here/init" "$busybox" | sha256sum | cut -c1-16)"
if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,dev,proc,sys,tmp,root}
cp "$busybox" "$tmp/bin/busybox"
install -m 0755 "$here/init" "$tmp/init"
gcc -static -O2 -Wall -o "$tmp/oomrepro" "$here/src/oomrepro.c"
(cd "$tmp" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --owner 0:0) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"

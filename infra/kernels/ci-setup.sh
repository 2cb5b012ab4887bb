#!/usr/bin/env bash
# Install what infra/kernels/build.sh needs (gcc, make, flex, bison, bc, libelf-dev, ...) if missing,
# then build every kernel of infra/kernels/defs (a cache hit when nothing changed; see README.md).
# Prints the wall time of the build step. Needs root or sudo only when something is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
for tool in gcc:gcc make:make flex:flex bison:bison bc:bc perl:perl xz:xz-utils patch:patch cpio:cpio \
            apt-get:apt dpkg:dpkg; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
[ -e /usr/include/libelf.h ] || need+=(libelf-dev)
[ -e /usr/include/openssl/opensslv.h ] || need+=(libssl-dev)
if [ "${#need[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

start=$(date +%s)
"$(dirname "$0")/build.sh" "$@"
echo "kernels: build step took $(( $(date +%s) - start )) s"

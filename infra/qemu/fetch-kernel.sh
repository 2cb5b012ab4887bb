#!/usr/bin/env bash
# Fetch a stock Debian kernel image named in infra/qemu/kernels/NAME.env into the oomsweep cache
# (never into /boot, nothing installed): pinned package and version, SHA256-checked, cached.
#
#   infra/qemu/fetch-kernel.sh NAME         e.g. 6.12 -> ~/.cache/oomsweep/kernel/6.12/vmlinuz-<release>
#
#   OOMSWEEP_KERNEL_CACHE  cache dir (default ~/.cache/oomsweep/kernel); the image goes to CACHE/NAME/
#
# The suite comes from a private apt root under CACHE/apt/ whose one source names Debian's archive
# the way the machine's own apt sources do (its configuration is read, never written). A second run
# with the image cached does no network access. Output: "NAME IMAGE (fetched|cached)".
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${OOMSWEEP_KERNEL_CACHE:-$HOME/.cache/oomsweep/kernel}"
name="${1:?usage: fetch-kernel.sh NAME (one of: $(cd "$HERE/kernels" && ls *.env | sed 's/\.env$//' | tr '\n' ' '))}"
def="$HERE/kernels/$name.env"
[ -f "$def" ] || { echo "fetch-kernel: unknown kernel $name (no $def)" >&2; exit 2; }
NAME="" SUITE="" PKG="" VERSION="" SHA256="" ARCHIVE=debian
# shellcheck disable=SC1090
source "$def"

dest="$CACHE/$NAME"
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/PACKAGE")" = "$PKG=$VERSION" ]; then
    echo "$NAME $(ls "$dest"/vmlinuz-* | head -1) (cached)"
    exit 0
fi

# The URI the machine's own apt sources use for Debian's ARCHIVE (debian, debian-security), deb822 or one-line.
uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E "/$ARCHIVE/?\$" | head -1)"
[ -n "$uri" ] || uri="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
       | awk '{print $2}' | grep -E "/$ARCHIVE/?\$" | head -1)"
uri="${uri:-http://deb.debian.org/$ARCHIVE}"

a="$CACHE/apt"
mkdir -p "$a/etc/sources.list.d" "$a/etc/preferences.d" "$a/state/lists/partial" "$a/cache/archives/partial" "$CACHE/debs"
cat > "$a/etc/sources.list.d/$SUITE.sources" <<SRC
Types: deb
URIs: $uri
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
opts=(-o "Dir::Etc=$a/etc" -o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$a/etc/sources.list.d"
      -o Dir::Etc::preferences=/dev/null -o "Dir::Etc::preferencesparts=$a/etc/preferences.d"
      -o "Dir::State=$a/state" -o "Dir::Cache=$a/cache" -o Dir::State::status=/var/lib/dpkg/status
      -o "APT::Sandbox::User=$(id -un)" -o Debug::NoLocking=1)

deb="$(ls "$CACHE/debs/${PKG}_"*.deb 2>/dev/null | head -1 || true)"
if [ -z "$deb" ] || ! echo "$SHA256  $deb" | sha256sum -c --quiet 2>/dev/null; then
    apt-get "${opts[@]}" update -qq
    (cd "$CACHE/debs" && apt-get "${opts[@]}" download "$PKG=$VERSION" >/dev/null) || {
        echo "fetch-kernel: $PKG=$VERSION is not in $SUITE at $uri any more (old backports are dropped;" \
             "snapshot.debian.org keeps them): update infra/qemu/kernels/$NAME.env" >&2; exit 1; }
    deb="$(ls "$CACHE/debs/${PKG}_"*.deb | head -1)"
fi
echo "$SHA256  $deb" | sha256sum -c --quiet || { echo "fetch-kernel: $deb: SHA256 differs from $def" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dpkg -x "$deb" "$tmp/root"
rm -rf "$dest" && mkdir -p "$dest"
cp "$tmp"/root/boot/vmlinuz-* "$tmp"/root/boot/config-* "$dest/"
echo "$PKG=$VERSION" > "$dest/PACKAGE"
echo "$SHA256  $(basename "$deb")" > "$dest/SHA256SUMS"
touch "$dest/.complete"
echo "$NAME $(ls "$dest"/vmlinuz-* | head -1) (fetched)"

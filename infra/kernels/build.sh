#!/usr/bin/env bash
# Build the small calibration kernels of infra/kernels/defs/*.env from Debian's source packages,
# cached by a hash of (source package + version, config fragments, patch series, recipe).
#
#   infra/kernels/build.sh [NAME ...]       build NAMEs (default: every defs/*.env); print each image
#
#   OOMSWEEP_KERNELS_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/oomsweep/kernels)
#   OOMSWEEP_KERNELS_JOBS   make -j (default 2); the build runs under `nice -n 5`
#   OOMSWEEP_KERNELS_DEFS   directory of the NAME.env definitions (default infra/kernels/defs)
#
# In a definition, FRAGMENTS and PATCHES are paths relative to infra/kernels/ (or absolute).
#
# Layout of the cache:
#   apt/                      a private apt root (sources, lists) for the defs' suites; the machine's
#                             own apt configuration is read, never written
#   debs/                     the downloaded linux-source-X.Y .debs (apt-get download)
#   src/<pkg>_<version>/      the pristine source tree (dpkg -x + tar), shared by every build
#   work/<name>/              tree/ (hard links to src; the files a patch touches are copies) and
#                             obj/ (make O=); kept, so a changed patch rebuilds only what it touches
#   builds/<name>-<hash12>/   bzImage, config, manifest.json, one log per step
#   <name> -> builds/<name>-<hash12>   the current build of NAME
#
# Output: one line per kernel on stdout, "NAME IMAGE (built in Ns|cached)". A failing step exits 1
# with "kernels: NAME: step STEP failed; log: FILE" on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${OOMSWEEP_KERNELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oomsweep/kernels}"
JOBS="${OOMSWEEP_KERNELS_JOBS:-2}"
DEFS="${OOMSWEEP_KERNELS_DEFS:-$HERE/defs}"
RECIPE=1   # bump when the steps below change what a build produces
export KBUILD_BUILD_TIMESTAMP="2018-11-14 00:00:00 UTC" KBUILD_BUILD_USER=oomsweep KBUILD_BUILD_HOST=oomsweep

at() { case "$1" in /*) echo "$1" ;; *) echo "$HERE/$1" ;; esac; }

die_step() {  # NAME STEP LOG
    echo "kernels: $1: step $2 failed; log: $3" >&2
    [ -f "$3" ] && tail -n 15 "$3" | sed 's/^/  | /' >&2
    exit 1
}

apt_opts() {
    local a="$CACHE/apt"
    echo "-o Dir::Etc=$a/etc -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=$a/etc/sources.list.d" \
         "-o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts=$a/etc/preferences.d" \
         "-o Dir::State=$a/state -o Dir::Cache=$a/cache -o Dir::State::status=/var/lib/dpkg/status" \
         "-o APT::Sandbox::User=$(id -un) -o Debug::NoLocking=1"
}

# The archive URI the machine's own apt sources use for Debian (deb822 or one-line format).
debian_uri() {
    local uri
    uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
           | grep -E '/debian/?$' | head -1)"
    [ -n "$uri" ] || uri="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
           | awk '{print $2}' | grep -E '/debian/?$' | head -1)"
    echo "${uri:-http://deb.debian.org/debian}"
}

fetch_source() {  # NAME SUITE PKG VERSION -> sets SRC
    local name="$1" suite="$2" pkg="$3" ver="$4" log="$CACHE/logs/fetch-$3_$4.log"
    SRC="$CACHE/src/${pkg}_${ver}"
    [ -f "$SRC/.complete" ] && return 0
    mkdir -p "$CACHE/apt/etc/sources.list.d" "$CACHE/apt/etc/preferences.d" \
        "$CACHE/apt/state/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/debs" "$CACHE/logs"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    cat > "$CACHE/apt/etc/sources.list.d/$suite.sources" <<EOF
Types: deb
URIs: $(debian_uri)
Suites: $suite
Components: main
Signed-By: $keyring
EOF
    local deb="$CACHE/debs/${pkg}_${ver}_all.deb"
    (
        echo "# $(date -u +%FT%TZ) fetch $pkg=$ver from $suite"
        if [ ! -f "$deb" ]; then
            # shellcheck disable=SC2046
            apt-get $(apt_opts) update || exit 1
            # shellcheck disable=SC2046
            (cd "$CACHE/debs" && apt-get $(apt_opts) download "$pkg=$ver") || exit 1
        fi
    ) > "$log" 2>&1 || die_step "$name" fetch "$log"
    (
        echo "# extract $deb"
        rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp/deb" || exit 1
        dpkg -x "$deb" "$SRC.tmp/deb" || exit 1
        tarball="$(ls "$SRC.tmp"/deb/usr/src/linux-source-*.tar.xz | head -1)"
        tar -xJf "$tarball" -C "$SRC.tmp" || exit 1
        rm -rf "$SRC.tmp/deb"
        rm -rf "$SRC" && mv "$SRC.tmp" "$SRC" && touch "$SRC/.complete"
    ) >> "$log" 2>&1 || die_step "$name" extract "$log"
}

build_one() {  # DEF_FILE
    local def="$1" NAME SUITE SRC_PKG SRC_VERSION FRAGMENTS PATCHES POLICIES INSTRUMENTS
    # shellcheck disable=SC1090
    source "$def"
    local start; start=$(date +%s)

    # The cache key: everything that decides the image.
    local key
    key="$( {
        echo "recipe=$RECIPE"
        echo "definition"; cat "$def"
        echo "source=$SRC_PKG=$SRC_VERSION suite=$SUITE"
        echo "gcc=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
        for f in $FRAGMENTS; do echo "fragment=$f"; cat "$(at "$f")"; done
        if [ -n "$PATCHES" ]; then
            echo "series"; cat "$(at "$PATCHES")/series"
            while read -r p; do [ -n "$p" ] && { echo "patch=$p"; cat "$(at "$PATCHES")/$p"; }; done < "$(at "$PATCHES")/series"
        fi
    } | sha256sum | cut -c1-64)"
    local patch_hash=""
    if [ -n "$PATCHES" ]; then
        patch_hash="$( { cat "$(at "$PATCHES")/series"; while read -r p; do [ -n "$p" ] && cat "$(at "$PATCHES")/$p"; done < "$(at "$PATCHES")/series"; } | sha256sum | cut -c1-12)"
    fi
    local B="$CACHE/builds/$NAME-${key:0:12}"
    if [ -f "$B/manifest.json" ] && [ -f "$B/bzImage" ]; then
        ln -sfn "builds/$NAME-${key:0:12}" "$CACHE/$NAME"
        echo "$NAME $B/bzImage (cached)"
        return 0
    fi

    fetch_source "$NAME" "$SUITE" "$SRC_PKG" "$SRC_VERSION"
    rm -rf "$B" && mkdir -p "$B"
    local W="$CACHE/work/$NAME"
    local T="$W/tree" O="$W/obj"
    local pristine; pristine="$(ls -d "$SRC"/linux-source-* | head -1)"

    # patch: the series is applied to fresh copies of the files it touches in a staging dir; the
    # work tree (a hard-linked copy of the pristine tree) then gets every file whose content differs
    # from what the series (or, for files the previous series touched, the pristine tree) says.
    # Files that did not change keep their mtime, so make rebuilds only what a patch changed.
    (
        if [ -d "$T" ] && [ "$(cat "$W/source" 2>/dev/null)" = "$pristine" ]; then
            echo "# tree: reuse $T"
        else
            echo "# tree: cp -al $pristine $T"
            rm -rf "$W" && mkdir -p "$W"
            cp -al "$pristine" "$T"
            echo "$pristine" > "$W/source"
            : > "$W/patched-files"
        fi
        S="$W/staging"
        rm -rf "$S" && mkdir -p "$S"
        : > "$W/patched-files.new"
        if [ -n "$PATCHES" ]; then
            while read -r p; do
                [ -n "$p" ] || continue
                for f in $(sed -n 's#^+++ b/\([^[:space:]]*\).*#\1#p' "$(at "$PATCHES")/$p"); do
                    echo "$f" >> "$W/patched-files.new"
                    if [ ! -e "$S/$f" ] && [ -e "$pristine/$f" ]; then
                        mkdir -p "$S/$(dirname "$f")" && cp "$pristine/$f" "$S/$f"
                    fi
                done
                echo "# patch -p1 < $PATCHES/$p"
                patch -d "$S" -p1 --forward --batch --no-backup-if-mismatch -i "$(at "$PATCHES")/$p" || exit 1
            done < "$(at "$PATCHES")/series"
        fi
        sort -u "$W/patched-files" "$W/patched-files.new" | while read -r f; do
            [ -n "$f" ] || continue
            if [ -e "$S/$f" ]; then want="$S/$f"; elif [ -e "$pristine/$f" ]; then want="$pristine/$f"; else want=""; fi
            if [ -z "$want" ]; then rm -f "$T/$f"; echo "# removed $f"
            elif ! cmp -s "$want" "$T/$f"; then
                mkdir -p "$T/$(dirname "$f")"
                cp "$want" "$T/$f.oomsweep-tmp" && mv "$T/$f.oomsweep-tmp" "$T/$f"   # never write through a hard link
                echo "# updated $f"
            else
                echo "# unchanged $f"
            fi
        done
        sort -u "$W/patched-files.new" > "$W/patched-files"
    ) > "$B/patch.log" 2>&1 || die_step "$NAME" patch "$B/patch.log"

    # config: tinyconfig + the fragments, then check every requested option survived Kconfig.
    local frag_paths=""
    for f in $FRAGMENTS; do frag_paths="$frag_paths $(at "$f")"; done
    (
        make -C "$T" O="$O" ARCH=x86_64 tinyconfig || exit 1
        # shellcheck disable=SC2086
        "$T/scripts/kconfig/merge_config.sh" -m -O "$O" "$O/.config" $frag_paths || exit 1
        make -C "$T" O="$O" ARCH=x86_64 olddefconfig || exit 1
        missing=""
        for line in $(grep -hE '^CONFIG_[A-Z0-9_]+=' $frag_paths); do
            grep -qx "$line" "$O/.config" || missing="$missing $line"
        done
        if [ -n "$missing" ]; then echo "options the kernel's Kconfig did not keep:$missing"; exit 1; fi
    ) > "$B/config.log" 2>&1 || die_step "$NAME" config "$B/config.log"

    # build
    local localversion="-oomsweep-${key:0:8}"
    {
        nice -n 5 make -C "$T" O="$O" ARCH=x86_64 LOCALVERSION="$localversion" -j"$JOBS" bzImage
    } > "$B/build.log" 2>&1 || die_step "$NAME" build "$B/build.log"

    local release hz preempt
    release="$(make -s -C "$T" O="$O" ARCH=x86_64 LOCALVERSION="$localversion" kernelrelease 2>/dev/null | tail -1)"
    hz="$(sed -n 's/^CONFIG_HZ=//p' "$O/.config")"
    if grep -qx 'CONFIG_PREEMPT=y' "$O/.config"; then preempt=full
    elif grep -qx 'CONFIG_PREEMPT_VOLUNTARY=y' "$O/.config"; then preempt=voluntary
    else preempt=none; fi
    local dynamic=false; grep -qx 'CONFIG_PREEMPT_DYNAMIC=y' "$O/.config" && dynamic=true
    cp "$O/arch/x86/boot/bzImage" "$B/bzImage"
    cp "$O/.config" "$B/config"
    local secs=$(( $(date +%s) - start ))
    python3 - "$B/manifest.json" <<EOF
import json, sys
json.dump({
    "name": "$NAME",
    "image": "$B/bzImage",
    "kernel_release": "$release",
    "source_package": "$SRC_PKG",
    "source_version": "$SRC_VERSION",
    "suite": "$SUITE",
    "build_hash": "$key",
    "patch_set": "$PATCHES",
    "patch_hash": "$patch_hash",
    "patches": [p for p in """$( [ -n "$PATCHES" ] && cat "$(at "$PATCHES")/series" )""".split() if p],
    "fragments": "$FRAGMENTS".split(),
    "hz": int("$hz"),
    "preempt": "$preempt",
    "preempt_dynamic": $( [ "$dynamic" = true ] && echo True || echo False ),
    "policies": "$POLICIES".split(),
    "instruments": "$INSTRUMENTS".split(),
    "sched_features": "$SCHED_FEATURES",
    "build_seconds": $secs,
    "gcc": "$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)",
}, open(sys.argv[1], "w"), indent=1)
EOF
    ln -sfn "builds/$NAME-${key:0:12}" "$CACHE/$NAME"
    echo "$NAME $B/bzImage (built in ${secs}s)"
}

mkdir -p "$CACHE/builds"
defs=()
if [ "$#" -eq 0 ]; then
    defs=("$DEFS"/*.env)
else
    for n in "$@"; do
        [ -f "$DEFS/$n.env" ] || { echo "kernels: unknown kernel '$n' (have: $(cd "$DEFS" && ls *.env | sed 's/\.env$//' | tr '\n' ' '))" >&2; exit 2; }
        defs+=("$DEFS/$n.env")
    done
fi
for d in "${defs[@]}"; do build_one "$d"; done

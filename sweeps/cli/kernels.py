"""`oomsweep kernels build|list`: a thin wrapper over infra/kernels/build.sh and its cache.

The build itself stays in the shell script (CI and a fresh machine run it without Python); this
command only runs it and says where each image is, so `--kernel NAME` can be chosen knowingly.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from sweeps.calibrate import kernels


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `kernels` to the `oomsweep` subcommands."""
    p = subparsers.add_parser("kernels", help="build the calibration kernels of infra/kernels, or list them",
                              description="build: run infra/kernels/build.sh (a cache hit when nothing changed) "
                                          "and print each image; list: every kernel of infra/kernels/defs, "
                                          "whether it is built, where its image is and the policies it offers, "
                                          "then Debian's stock images of infra/qemu/kernels (--kernel 6.1, 6.12).")
    sub = p.add_subparsers(dest="kernels_command", required=True, metavar="build|list")
    b = sub.add_parser("build", help="infra/kernels/build.sh [NAME ...]")
    b.add_argument("names", nargs="*", metavar="NAME", help="kernels to build (default: all)")
    sub.add_parser("list", help="the defined kernels, their images and policies")
    return p


def list_kernels(out: TextIO) -> int:
    """One block per defined kernel; 0 even when some are not built (listing is not a check)."""
    for name, env in kernels.defined().items():
        wanted = tuple(env.get("POLICIES", "").split())
        try:
            spec = kernels.load(name)
        except kernels.KernelError:
            print(f"{name}: not built (oomsweep kernels build {name})", file=out)
            print(f"    policies when built: {' '.join(wanted)}", file=out)
            continue
        print(f"{name}: {spec.image}", file=out)
        print(f"    release {spec.release}, HZ {spec.hz}, preempt {spec.preempt}, patch set {spec.patch_hash}",
              file=out)
        print(f"    policies: {' '.join(spec.policies)}", file=out)
        missing = [p for p in wanted if p not in spec.policies]
        if missing:
            print(f"    older than its definition (lacks {' '.join(missing)}): oomsweep kernels build {name}",
                  file=out)
    _list_stock(out)
    return 0


def _list_stock(out: TextIO) -> None:
    """Debian's stock images (infra/qemu/kernels/NAME.env): fetched, not built, no policy switch."""
    from sweeps.calibrate import qemu, stock_kernels
    from sweeps.errors import QemuError

    for name, env in stock_kernels.defined().items():
        pinned = f"{env.get('PKG', '?')}={env.get('VERSION', '?')}"
        try:
            where = str(stock_kernels.image(name, qemu.cache_dir()))
        except QemuError:
            where = f"not fetched ({stock_kernels.FETCH_SH.name} {name})"
        print(f"{name} (stock): {where}", file=out)
        print(f"    package {pinned}; policy: Debian's own (no oomsweep.policy=, no instruments)", file=out)


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """build: build.sh's exit code (0 ok, 1 a step failed, 2 an unknown name); list: 0."""
    if args.kernels_command == "build":
        return kernels.build(args.names)
    return list_kernels(stdout or sys.stdout)

"""`oomsweep verify`: its arguments and exit codes; the checks are sweeps.storage.verify."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path
from typing import Any, TextIO

from sweeps.errors import UsageError

EXIT_OK, EXIT_PROBLEMS = 0, 1  # 1: a stored file or key is wrong


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `verify` to the `oomsweep` subcommands (sweeps.cli.commands maps it to `run`)."""
    v = subparsers.add_parser("verify", help="check every stored file (footer, schema, pages, provenance, keys)")
    v.add_argument("output", metavar="OUTPUT")
    v.add_argument("--sweep", help="only this sweep (default: every sweep under OUTPUT)")
    return v


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Check every file of each sweep (or the one named); exit 1 when something is wrong."""
    from sweeps.storage import dataset as storage
    from sweeps.storage.verify import verify_sweep

    out = out or sys.stdout
    if not Path(args.output).is_dir():
        raise UsageError(f"{args.output}: not a directory")
    names = [urllib.parse.unquote(d.name[len("sweep="):]) for d in storage.list_sweep_dirs(args.output)]
    if args.sweep:
        if args.sweep not in names:
            raise UsageError(f"--sweep: no sweep {args.sweep!r} in {args.output}; stored: {', '.join(names) or 'none'}")
        names = [args.sweep]
    if not names:
        raise UsageError(f"{args.output}: no sweep results here")
    bad = 0
    for name in names:
        c = verify_sweep(args.output, name)
        for line in c.problems + c.notes:
            print(line, file=out)
        state = "ok" if not c.problems else f"{len(c.problems)} problem(s)"
        print(f"sweep {name}: {c.files} files, {c.rows} rows: {state}", file=out)
        bad += len(c.problems)
    return EXIT_PROBLEMS if bad else EXIT_OK

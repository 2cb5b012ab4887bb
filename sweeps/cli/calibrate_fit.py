"""`oomsweep calibrate fit`: its flags; the command itself is sweeps.calibrate.fit_command.

`calibrate`'s first argument is a scenario file, so `fit` cannot be an argparse sub-command of it:
sweeps.cli.commands.main turns `calibrate fit ...` into the hidden command `calibrate-fit ...`,
which then runs, and reports its errors with their exit codes (sweeps.errors), like every other
command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from sweeps.calibrate.fit_command import DEFAULT_PROFILE, FitOptions, run_fit

COMMAND = "calibrate-fit"  # the parser's name for `calibrate fit`
SHOWN_AS = "calibrate fit"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the hidden `calibrate-fit` (typed `calibrate fit`) to the `oomsweep` subcommands."""
    p = subparsers.add_parser(  # no help=: not listed among the commands; `oomsweep calibrate --help` names it
        COMMAND, prog=f"oomsweep {SHOWN_AS}",
        description="Measure the values a reference dataset's console logs time directly (manifest `measure:`), "
                    "fit the model's measurable costs to its kernel runs with those set, write both as a "
                    "machine profile, and print model vs kernel per scenario (fit set and check set).")
    p.set_defaults(shown_as=SHOWN_AS)
    p.add_argument("reference", nargs="?", default=None, metavar="REFERENCE",
                   help="reference dataset directory (default calibration/reference)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile name to write (default {DEFAULT_PROFILE})")
    p.add_argument("--out", help="profile file to write (default oommodel/profiles/<profile>.yaml of this checkout)")
    p.add_argument("--no-write", action="store_true", help="fit and check only; write nothing")
    p.add_argument("--check-only", action="store_true",
                   help="no fit: check the values of the existing profile --profile against the reference")
    p.add_argument("--seeds", type=int, default=50, help="model replicates per scenario in the check (default 50)")
    p.add_argument("--passes", type=int, default=2, help="passes over the fit plan (default 2)")
    p.add_argument("--policy", help="model policy of the stock-kernel rows (default: the manifest's; "
                                    "kernel check rows keep their own)")
    return p


def options(args: argparse.Namespace) -> FitOptions:
    """The parsed flags as the command's options."""
    return FitOptions(reference=args.reference, profile=args.profile, out=args.out, no_write=args.no_write,
                      check_only=args.check_only, seeds=args.seeds, passes=args.passes, policy=args.policy)


def run(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """0 done; bad input raises (exit 2 through sweeps.cli.commands._dispatch)."""
    return run_fit(options(args), stdout or sys.stdout, stderr or sys.stderr)

"""`oomsweep history`: its arguments and exit codes; the statistics are sweeps.analysis.history."""

from __future__ import annotations

import argparse
from typing import Any

from sweeps.errors import EXIT_OK, UsageError

EXIT_CHANGED = 1  # --fail-on-change and a change was flagged


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `history` to the `oomsweep` subcommands (sweeps.cli.commands maps it to `run`)."""
    h = subparsers.add_parser(
        "history", help="lockup probability per policy per execution, and significant changes between executions"
    )
    h.add_argument("output", metavar="OUTPUT")
    h.add_argument("--sweep", help="sweep name (needed when OUTPUT holds several)")
    h.add_argument("--alpha", type=float, default=0.05, help="flag changes with p below this (default 0.05)")
    h.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default 0.95)")
    h.add_argument("--fail-on-change", action="store_true",
                   help="exit 1 when a significant change is flagged (for scheduled runs that alert)")
    return h


def run(args: argparse.Namespace) -> int:
    """Print the history table; exit 1 with --fail-on-change when a change is flagged."""
    from sweeps.analysis.history import format_history, load_history
    from sweeps.storage.dataset import pick_sweep

    name = pick_sweep(args.output, args.sweep)
    if not 0.0 < args.confidence < 1.0:
        raise UsageError(f"--confidence: must be in (0, 1), got {args.confidence}")
    if not 0.0 < args.alpha < 1.0:
        raise UsageError(f"--alpha: must be in (0, 1), got {args.alpha}")
    h = load_history(args.output, name, alpha=args.alpha, confidence=args.confidence)
    print(format_history(h, args.confidence))
    return EXIT_CHANGED if (args.fail_on_change and h.changes) else EXIT_OK

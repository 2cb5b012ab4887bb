"""`oomsweep` command line (also `python -m sweeps`).

Exit codes (`sweeps.errors`): 0 done; 1 rows failed, timed out or were lost, results could not be
written (disk full) or MLflow failed, and also an internal error of oomsweep (with its traceback);
2 bad input (one message, never a traceback); 130 interrupted; 141 stdout closed by its reader
(`oomsweep ... | head`), quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sweeps.errors import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Interrupted,
    OomsweepError,
    UsageError,
    one_line,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oomsweep",
        description="Parameter sweeps of the oommodel OOM-killer model on Ray, results in Parquet and MLflow.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run or resume a sweep file")
    r.add_argument("sweep_file", metavar="SWEEP.yaml")
    r.add_argument("--address", help="Ray cluster to join: 'auto' or 'ray://host:port' (default: local Ray, "
                   "or the Ray job's cluster when RAY_ADDRESS is set)")
    r.add_argument("--output", help="dataset directory (default: the sweep file's `output`)")
    r.add_argument("--workers", type=int, help="CPUs for the local Ray (default: all cores)")
    r.add_argument("--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    r.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    r.add_argument("--fail-fast", action="store_true", help="stop at the first row whose simulation raises")
    r.add_argument("--dry-run", action="store_true", help="print cells, rows and an estimated time; run nothing")
    r.add_argument("--yes", action="store_true", help="run even if the grid has more rows than --max-rows")
    r.add_argument("--max-rows", type=int, default=None,
                   help="rows above which --yes is required (default 1,000,000 or $OOMSWEEP_MAX_ROWS)")
    r.add_argument("--row-timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget of one row; a row that exceeds it is stored with status 'timeout' "
                        "(default 300, 0 = no budget)")
    r.add_argument("--replicate-block", type=int, default=None, metavar="K",
                   help="run replicates K*R .. K*R+R-1 (R = the sweep's replicates): fresh seeds for a "
                        "scheduled run; the nightly script passes the day number")
    r.add_argument("--serial", action="store_true", help=argparse.SUPPRESS)  # no Ray: debugging and tests
    r.add_argument("--flush-seconds", type=float, default=10.0, help=argparse.SUPPRESS)

    rep = sub.add_parser("report", help="per-policy table of a stored sweep")
    rep.add_argument("output", metavar="OUTPUT")
    rep.add_argument("--sweep", help="sweep name (needed when OUTPUT holds several)")
    rep.add_argument("--by", nargs="+", default=[], metavar="KEY", help="grid keys to break the table down by")

    c = sub.add_parser("compare", help="paired comparison of two policies (same cells and seeds)")
    c.add_argument("output", metavar="OUTPUT")
    c.add_argument("a", metavar="A")
    c.add_argument("b", metavar="B")
    c.add_argument("--sweep")

    sub.add_parser("policies", help="list the policies the model knows")

    v = sub.add_parser("validate", help="validate a sweep file without running it")
    v.add_argument("sweep_file", metavar="SWEEP.yaml")
    v.add_argument("--yes", action="store_true", help="validate every cell even if the grid has more rows than --max-rows")
    v.add_argument("--max-rows", type=int, default=None,
                   help="rows above which --yes is required (default 1,000,000 or $OOMSWEEP_MAX_ROWS)")

    lg = sub.add_parser("log", help="log stored sweep results to MLflow (e.g. after the store was unreachable)")
    lg.add_argument("output", metavar="OUTPUT")
    lg.add_argument("--sweep")
    lg.add_argument("--mlflow-uri")

    from sweeps.analysis import history
    from sweeps.calibrate import command as calibrate

    history.register(sub)
    calibrate.register(sub)
    return p


def _pick_sweep(output: str, sweep: str | None) -> str:
    from sweeps.storage.dataset import list_sweeps

    names = list_sweeps(output)
    if sweep:
        if sweep not in names:
            import difflib

            m = difflib.get_close_matches(sweep, names, n=1)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise UsageError(f"--sweep: no sweep {sweep!r} in {output}{hint}; stored: {', '.join(names) or 'none'}")
        return sweep
    if not names:
        raise UsageError(f"{output}: no sweep results here")
    if len(names) > 1:
        raise UsageError(f"{output} holds several sweeps ({', '.join(names)}); choose one with --sweep")
    return names[0]


def _max_rows(value: int | None) -> int:
    if value is not None:
        return value
    raw = os.environ.get("OOMSWEEP_MAX_ROWS", "1000000")
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"OOMSWEEP_MAX_ROWS: must be an integer, got {raw!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from sweeps.run.runner import RunOptions, run_sweep

    from sweeps.execution.batching import DEFAULT_ROW_TIMEOUT_S

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers: must be >= 1")
    if args.row_timeout is not None and not args.row_timeout >= 0:
        raise UsageError("--row-timeout: must be >= 0 seconds (0 = no budget)")
    row_timeout = DEFAULT_ROW_TIMEOUT_S if args.row_timeout is None else (args.row_timeout or None)
    opts = RunOptions(
        output=args.output,
        address=args.address,
        workers=args.workers,
        mlflow_uri=args.mlflow_uri,
        no_mlflow=args.no_mlflow,
        fail_fast=args.fail_fast,
        dry_run=args.dry_run,
        yes=args.yes,
        max_rows=_max_rows(args.max_rows),
        executor="serial" if args.serial else "ray",
        flush_seconds=args.flush_seconds,
        row_timeout=row_timeout,
        replicate_block=args.replicate_block,
    )
    return run_sweep(args.sweep_file, opts).exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from sweeps.analysis.report import format_table, policy_table
    from sweeps.storage.dataset import read_sweep

    name = _pick_sweep(args.output, args.sweep)
    df = read_sweep(args.output, name, exclude=("scenario_json",))
    table = policy_table(df, by=args.by)
    versions = sorted(str(v) for v in df["model_version"].dropna().unique())
    if len(versions) > 1:
        print(f"note: rows of several model versions ({', '.join(versions)}) are pooled; cells differ "
              f"between versions, so rerun the sweep into a new output to compare like with like", file=sys.stderr)
    print(f"sweep {name}: {len(df)} rows, {int((df['status'] != 'ok').sum())} not ok")
    print(format_table(table))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from sweeps.analysis.report import compare_policies
    from sweeps.storage.dataset import read_sweep

    name = _pick_sweep(args.output, args.sweep)
    df = read_sweep(args.output, name, columns=["policy", "cell_id", "replicate", "lockup", "status"])
    d = compare_policies(df, args.a, args.b)  # an unknown policy: InputError, exit 2
    print(f"sweep {name}: {args.a} vs {args.b} over {d.n_pairs} paired (cell, replicate) rows")
    print(f"  P(lockup | {args.a}) - P(lockup | {args.b}) = {d.diff:+.4f}  95% CI [{d.low:+.4f}, {d.high:+.4f}]")
    print(f"  discordant pairs: {args.a} only {d.b}, {args.b} only {d.c};  McNemar exact p = {d.p_value:.4g}")
    return EXIT_OK


def cmd_policies(args: argparse.Namespace) -> int:
    from sweeps.spec.oommodel_api import policy_registry

    for name, pol in policy_registry().items():
        opts = ", ".join(f"{k}={v!r}" for k, v in dict(getattr(pol, "options", {}) or {}).items())
        print(f"{name}{f'  [{opts}]' if opts else ''}")
        desc = str(getattr(pol, "description", "")).strip()
        if desc:
            print(f"    {desc.splitlines()[0]}")
        for ref in getattr(pol, "references", ())[:3]:
            print(f"    ref: {ref}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from sweeps.spec.grid import count_cells
    from sweeps.run.runner import load_sweep_checked

    spec = load_sweep_checked(args.sweep_file, _max_rows(args.max_rows), args.yes)
    cells = count_cells(spec)
    reps = spec.max_replicates
    print(
        f"{args.sweep_file}: ok: sweep {spec.name}, {cells} cells × {len(spec.policies)} policies × "
        f"{'up to ' if not isinstance(spec.replicates, int) else ''}{reps} replicates = {cells * len(spec.policies) * reps} rows"
    )
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    import pyarrow.compute as pc

    from sweeps.storage.dataset import list_sweeps, read_table
    from sweeps.tracking.mlflow_log import log_sweep

    names = [_pick_sweep(args.output, args.sweep)] if args.sweep else list_sweeps(args.output)
    if not names:
        raise UsageError(f"{args.output}: no sweep results here")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in names:
        ids = read_table(args.output, name, columns=["execution_id"]).column("execution_id")
        for eid in sorted(str(x) for x in pc.unique(ids).to_pylist() if x):
            res = log_sweep(Path(args.output), name, tracking_uri=args.mlflow_uri, execution_id=eid)
            state = "already logged" if getattr(res, "already_logged", False) else "logged"
            print(f"{name} execution {eid}: {state} (experiment {getattr(res, 'experiment', name)!r}, "
                  f"run {getattr(res, 'parent_run_id', '?')})")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
    "policies": cmd_policies,
    "validate": cmd_validate,
    "log": cmd_log,
    "history": lambda args: _lazy("sweeps.analysis.history", "run_history")(args),
    "calibrate": lambda args: _lazy("sweeps.calibrate.command", "run_calibrate")(args),
}


def _lazy(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        return _stdout_closed()


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; our own errors become one line and their exit code, a bug stays a traceback."""
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(Interrupted.label, file=sys.stderr)
        return EXIT_INTERRUPTED
    except OomsweepError as exc:
        print(f"oomsweep {args.command}: {exc.label}: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        from sweeps.spec.oommodel_api import model_input_errors

        if isinstance(exc, model_input_errors()):  # a scenario or policy option the model rejects
            print(f"oomsweep {args.command}: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise  # a bug of oomsweep: the traceback, and Python's exit 1


def _stdout_closed() -> int:
    """The reader of our stdout went away (`oomsweep policies | head -1`): stop quietly.

    Python would report the closed pipe again when it flushes stdout at exit, so stdout is pointed
    at /dev/null first.  Exit 141 (128 + SIGPIPE), what a C tool killed by SIGPIPE reports, so that
    `set -o pipefail` sees the same as for `cat`.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())

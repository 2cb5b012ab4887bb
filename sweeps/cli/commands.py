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
from typing import Any

from sweeps.errors import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_FAILED,
    EXIT_OK,
    InputError,
    Interrupted,
    OomsweepError,
    UsageError,
    one_line,
)


ALL_EXECUTIONS_HELP = ("pool the rows of every configuration stored for the sweep (default: only the cells, "
                       "policies and replicates of its latest execution)")


def _selected(output: str, name: str, all_executions: bool, **read: Any):
    """The rows of the sweep that the table is about (sweeps.analysis.selection), the selection, and whether
    stored rows of other configurations were left out (said on stderr, with the selection's notes)."""
    from sweeps.analysis.selection import left_out_note, select
    from sweeps.storage.dataset import read_sweep

    sel = select(output, name, all_executions=all_executions)
    df = read_sweep(output, name, filter=sel.filter, **read)
    left_out = left_out_note(output, name, sel, len(df))
    for note in (*sel.notes, left_out):
        if note:
            print(note, file=sys.stderr)
    return df, sel, left_out is not None


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
    rep.add_argument("--all-executions", action="store_true", help=ALL_EXECUTIONS_HELP)
    rep.add_argument("--format", choices=("table", "text"), default="table",
                     help="table: every column; text: 72 columns, one block per --by value, for a mail")
    rep.add_argument("--plots", metavar="DIR", help="also write the sweep's plots (PNG) into DIR")

    c = sub.add_parser("compare", help="paired comparison of two policies (same cells and seeds)")
    c.add_argument("output", metavar="OUTPUT")
    c.add_argument("a", metavar="A")
    c.add_argument("b", metavar="B")
    c.add_argument("--sweep")
    c.add_argument("--all-executions", action="store_true", help=ALL_EXECUTIONS_HELP)

    c.add_argument("--by", metavar="KEY", help="compare per value of this key, p-values adjusted over the values")
    c.add_argument("--adjust", choices=("holm", "fdr_bh"), default="holm",
                   help="with --by: Holm (family-wise error rate, default) or Benjamini-Hochberg (false discovery rate)")

    ex = sub.add_parser("explain", help="where in the sweep a policy locks up: PRIM box, tree, key ranking")
    ex.add_argument("output", metavar="OUTPUT")
    ex.add_argument("--sweep")
    ex.add_argument("--policy", required=True, metavar="P", help="the policy whose lockups to explain")
    ex.add_argument("--against", metavar="Q", help="explain where P locks up and Q does not (same cell and seed)")
    ex.add_argument("--sweep-file", metavar="SWEEP.yaml",
                    help="the sweep file: with a saltelli sample design, adds Sobol indices")
    ex.add_argument("--box", type=int, metavar="I", help="report box I of the peeling trajectory (default: best F1)")
    ex.add_argument("--plots", metavar="DIR", help="where to write the PNGs (default: explain-<sweep>/)")
    ex.add_argument("--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    ex.add_argument("--no-mlflow", action="store_true", help="do not log to the sweep's MLflow parent run")

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

    from sweeps.cli import calibrate, calibrate_fit, history, kernels, verify

    history.register(sub)
    calibrate.register(sub)
    calibrate_fit.register(sub)
    kernels.register(sub)
    verify.register(sub)
    return p


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

    if args.output is not None and not args.output.strip():
        raise UsageError("--output: must name a directory, got an empty string")
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


def _declared_policies(output: str, sweep: str) -> list[str]:
    """The sweep file's policy order, from the newest provenance that names a readable sweep file."""
    from sweeps.spec.parse import load_sweep
    from sweeps.storage.dataset import read_provenance, readable_files

    files = sorted(readable_files(output, sweep, on_bad=None), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files[:20]:
        try:
            sweep_file = read_provenance(path).get("sweep_file")
            if sweep_file and Path(sweep_file).is_file():
                return [p.label for p in load_sweep(sweep_file).policies]
        except (OSError, ValueError, OomsweepError):
            continue
    return []


def cmd_report(args: argparse.Namespace) -> int:
    from sweeps.analysis.report import format_table, format_text, policy_table, resolve_column, stored_horizon
    from sweeps.analysis.summary import INTERVAL_NOTE
    from sweeps.storage.dataset import pick_sweep

    name = pick_sweep(args.output, args.sweep)
    df, sel, left_out = _selected(args.output, name, args.all_executions, exclude=("scenario_json",))
    policies = _declared_policies(args.output, name)
    horizon = stored_horizon(args.output, name)
    table = policy_table(df, by=args.by, policies=policies, horizon_s=horizon)
    by_cols = [resolve_column(df, k) for k in args.by]
    versions = sorted(str(v) for v in df["model_version"].dropna().unique())
    if len(versions) > 1:
        print(f"note: rows of several model versions ({', '.join(versions)}) are pooled; cells differ "
              f"between versions, so rerun the sweep into a new output to compare like with like", file=sys.stderr)
    executions = df["execution_id"].nunique() if "execution_id" in df else 0
    reps = f"replicates {int(df['replicate'].min())}..{int(df['replicate'].max())}" if len(df) else "no replicates"
    not_ok = int((df['status'] != 'ok').sum())
    ran = f"{executions} execution{'s' if executions != 1 else ''}"
    if sel.filter is not None and not left_out:  # the latest configuration is every stored row
        covers = (f"sweep {name}: every stored row, all blocks pooled ({reps}, {ran}): "
                  f"{len(df)} rows, {not_ok} not ok")
    else:  # rows of other configurations left out (named on stderr), or every configuration pooled
        covers = f"sweep {name}: {len(df)} rows, {not_ok} not ok; {sel.header} ({reps}, {ran})"
    if args.format == "text":
        print(format_text(table, covers, by_cols))
    else:
        print(covers)
        print(format_table(table, by_cols))
        print(f"({INTERVAL_NOTE})")
    if args.plots:
        df.attrs.update(output=args.output, sweep=name)
        _report_plots(df, table if not by_cols else policy_table(df, policies=policies, horizon_s=horizon), policies,
                      args.plots, covers, horizon)
    return EXIT_OK


def _thresholds(df) -> tuple[float | None, float | None]:
    """lockup_after_s and horizon_s of the sweep's scenario (its first stored row), if readable."""
    import json

    import pyarrow.parquet as pq

    from sweeps.storage.dataset import readable_files

    try:
        first = readable_files(df.attrs["output"], df.attrs["sweep"], on_bad=None)[0]
        scenario = json.loads(pq.read_table(first, columns=["scenario_json"]).column(0)[0].as_py())
        return float(scenario["lockup_after_s"]), float(scenario["horizon_s"])
    except (KeyError, IndexError, OSError, ValueError, TypeError):
        return None, None


def _report_plots(df, table, policies, directory: str, covers: str, horizon_s: float | None) -> None:
    from sweeps.analysis.plots import write_plots
    from sweeps.analysis.summary import Tally, policy_table as summary_table
    from sweeps.tracking.mlflow_log import grid_columns

    grid = grid_columns(df)
    cells = summary_table(df, by=["cell_id", *grid], policies=policies) if grid else table
    order = list(table["policy"])
    curves = {p: Tally().add_rows(df[df["policy"] == p], horizon_s).survival() for p in order}  # as the table censors
    lockup_after, horizon = _thresholds(df)
    paths = write_plots(directory, table, cells, curves, grid, order, lockup_after, horizon, covers)
    for path in paths:
        print(f"plot: {path}", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    from sweeps.analysis.report import compare_policies
    from sweeps.storage.dataset import pick_sweep

    name = pick_sweep(args.output, args.sweep)
    cols = ["policy", "cell_id", "replicate", "lockup", "status"]
    if args.by:
        from sweeps.spec.identity import param_column

        cols.append(param_column(args.by))
    import pyarrow as pa

    try:
        df, sel, _ = _selected(args.output, name, args.all_executions, columns=cols)
    except (pa.ArrowInvalid, KeyError):
        if args.by:
            raise UsageError(f"--by: {args.by}: no such key column in sweep {name}") from None
        raise
    d = compare_policies(df, args.a, args.b)  # an unknown policy: InputError, exit 2
    print(f"sweep {name}: {args.a} vs {args.b} over {d.n_pairs} paired (cell, replicate) rows; {sel.header}")
    print(f"  P(lockup | {args.a}) - P(lockup | {args.b}) = {d.diff:+.4f}  95% CI [{d.low:+.4f}, {d.high:+.4f}]")
    print(f"  discordant pairs: {args.a} only {d.b}, {args.b} only {d.c};  McNemar exact p = {d.p_value:.4g}")
    print(_pairing_text(df, args.a, args.b))
    if args.by:
        from sweeps.analysis.report import compare_by, format_table

        table = compare_by(df, args.a, args.b, args.by, args.adjust)
        label = {"holm": "Holm (family-wise error rate)", "fdr_bh": "Benjamini-Hochberg (false discovery rate)"}
        import textwrap

        print()
        print(textwrap.fill(f"by {args.by}: McNemar p per value; p_adj: {label[args.adjust]} over the "
                            f"{len(table)} values (statsmodels); significant = p_adj <= 0.05; intervals "
                            f"are per-value 95 %", width=72, break_on_hyphens=False))
        print(format_table(table))
    return EXIT_OK


def _pairing_text(df, a: str, b: str) -> str:
    from sweeps.analysis.report import compare_pairing_gain

    g = compare_pairing_gain(df, a, b)
    if g.n_pairs == 0 or g.ratio != g.ratio:
        return "  pairing: no variance to compare (no lockup in either policy)"
    return (f"  pairing: the shared seeds leave {g.ratio:.2f} [{g.low:.2f}, {g.high:.2f}] of the variance\n"
            f"  independent seeds would give the difference; those would need\n"
            f"  {1 / g.ratio:.1f}x the runs for the same interval width")


def cmd_explain(args: argparse.Namespace) -> int:
    from sweeps.storage.dataset import pick_sweep, read_sweep

    name = pick_sweep(args.output, args.sweep)
    design = None
    if args.sweep_file:
        from sweeps.spec.grid import sample_design
        from sweeps.run.runner import load_sweep_checked

        spec = load_sweep_checked(args.sweep_file, _max_rows(None), True)
        if spec.name != name:
            raise UsageError(f"--sweep-file: {args.sweep_file} is sweep {spec.name!r}, not {name!r}")
        if spec.sample is not None and spec.sample.method == "saltelli":
            design = sample_design(spec.sample)
    if args.box is not None and args.box < 0:
        raise UsageError("--box: must be >= 0")
    df = read_sweep(args.output, name, exclude=("scenario_json",))
    from sweeps.analysis import explain as X

    try:
        e = X.explain(df, args.policy, args.against, sweep=name, select=args.box, saltelli_design=design)
    except InputError as exc:  # no such policy, no lockup to explain, a design point not run yet
        raise UsageError(f"--policy: {exc}" if "policy" in str(exc) else str(exc)) from None
    text = X.format_explanation(e)
    if args.sweep_file and design is None:
        text += "\n\n(no Sobol indices: the sweep's sample design is not saltelli)"
    print(text)
    plots = Path(args.plots or f"explain-{name}")
    figures = X.explanation_figures(e, plots)
    print("\nplots: " + ", ".join(str(p) for p in figures))
    if not args.no_mlflow:
        from sweeps.tracking.explain_log import log_explanation

        eids = sorted((str(v) for v in df["execution_id"].dropna().unique()), reverse=True)
        stem = args.policy if args.against is None else f"{args.policy}_not_{args.against}"
        try:
            run_id = log_explanation(args.mlflow_uri, name, eids, text, figures, X.explanation_metrics(e),
                                     f"explain_{stem}")
        except Exception as exc:  # the text and PNGs are out already; a tracking failure is said, not fatal
            print(f"oomsweep explain: MLflow not updated: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if run_id is None:
            print(f"oomsweep explain: no MLflow parent run of sweep {name!r}; nothing logged "
                  f"(log the sweep first: oomsweep log {args.output} --sweep {name})", file=sys.stderr)
        else:
            print(f"logged to MLflow parent run {run_id} (artifacts under explain/)")
    return EXIT_OK


def cmd_policies(args: argparse.Namespace) -> int:
    from sweeps.spec.oommodel_api import policy_registry

    for name, pol in policy_registry().items():
        opts = ", ".join(f"{k}={v!r}" for k, v in pol.options.items())
        print(f"{name}{f'  [{opts}]' if opts else ''}")
        desc = pol.description.strip()
        if desc:
            print(f"    {desc.splitlines()[0]}")
        print(f"    kernel base: {pol.kernel_base}")
        for ref in pol.references[:3]:
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

    from sweeps.storage import executions
    from sweeps.storage.dataset import list_sweeps, pick_sweep, read_table
    from sweeps.tracking.mlflow_log import log_sweep

    names = [pick_sweep(args.output, args.sweep)] if args.sweep else list_sweeps(args.output)
    if not names:
        raise UsageError(f"{args.output}: no sweep results here")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in names:
        ids = read_table(args.output, name, columns=["execution_id"]).column("execution_id")
        for eid in sorted(str(x) for x in pc.unique(ids).to_pylist() if x):
            res = log_sweep(Path(args.output), name, tracking_uri=args.mlflow_uri, execution_id=eid,
                            say=lambda msg: print(msg, file=sys.stderr))
            executions.mark_logged(args.output, name, eid, res)
            state = ("already logged" if res.already_logged else
                     f"completed its unfinished parent run in {res.seconds:.1f} s" if res.resumed else
                     f"logged in {res.seconds:.1f} s")
            print(f"{name} execution {eid}: {state} (experiment {res.experiment!r}, run {res.parent_run_id}; "
                  f"open the UI at {res.ui_path})")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
    "explain": cmd_explain,
    "policies": cmd_policies,
    "validate": cmd_validate,
    "log": cmd_log,
    "history": lambda args: _lazy("history")(args),
    "calibrate": lambda args: _lazy("calibrate")(args),
    "calibrate-fit": lambda args: _lazy("calibrate_fit")(args),
    "kernels": lambda args: _lazy("kernels")(args),
    "verify": lambda args: _lazy("verify")(args),
}


def _lazy(command: str):
    """The handler of a command whose module is imported only when it runs (sweeps/cli/<command>.py)."""
    import importlib

    return importlib.import_module(f"sweeps.cli.{command}").run


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["calibrate", "fit"]:  # `calibrate`'s first argument is otherwise a scenario file
        argv = ["calibrate-fit", *argv[2:]]  # sweeps/cli/calibrate_fit.py
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
        print(f"oomsweep {_shown(args)}: {exc.label}: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        from sweeps.spec.oommodel_api import model_input_errors

        if isinstance(exc, model_input_errors()):  # a scenario or policy option the model rejects
            print(f"oomsweep {_shown(args)}: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise  # a bug of oomsweep: the traceback, and Python's exit 1


def _shown(args: argparse.Namespace) -> str:
    """The command as the user typed it (`calibrate fit` for the parser's `calibrate-fit`)."""
    return getattr(args, "shown_as", None) or args.command


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

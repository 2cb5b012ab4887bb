"""`oomsweep history OUTPUT --sweep NAME`: lockup probability per policy per execution, and changes.

Scheduled runs of one sweep append to the same dataset; each run (`oomsweep run` invocation) stamps
its rows with an `execution_id`.  Rows are never recomputed (resume skips stored keys), so an
execution holds the rows it computed: after a model change (new cell ids), a raised `replicates`,
or new grid values.  Executions are independent samples, so consecutive executions are compared
per policy with the two-proportion z test (pooled), and the difference gets Newcombe's (1998)
hybrid score interval (method 10) built from the Wilson intervals of sweeps.analysis.stats.  A change with
p < alpha is flagged.  No multiple-comparison correction is applied: the number of tests is shown.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from sweeps.analysis.stats import Proportion, wilson
from sweeps.errors import EXIT_OK, InputError, UsageError

EXIT_CHANGED = 1  # --fail-on-change and a change was flagged


@dataclass(frozen=True)
class Execution:
    """One `oomsweep run` that stored rows: when (first file written), with which model."""

    execution_id: str
    started: str  # ISO-8601 UTC from the files' provenance ("" if unknown)
    model_version: str
    git_sha: str
    rows: int
    cells: int
    replicates: str = ""  # "first..last" replicate number of its rows (a --replicate-block shows here)


@dataclass(frozen=True)
class TwoProportion:
    """p2 - p1 for independent samples: Newcombe hybrid score CI and pooled z test."""

    diff: float
    low: float
    high: float
    z: float
    p_value: float


@dataclass(frozen=True)
class HistoryRow:
    policy: str
    execution_id: str
    prop: Proportion
    errors: int
    change: TwoProportion | None  # vs the previous execution that ran this policy
    significant: bool


@dataclass(frozen=True)
class History:
    sweep: str
    executions: tuple[Execution, ...]
    rows: tuple[HistoryRow, ...]
    alpha: float

    @property
    def changes(self) -> tuple[HistoryRow, ...]:
        return tuple(r for r in self.rows if r.significant)

    @property
    def tests(self) -> int:
        return sum(1 for r in self.rows if r.change is not None)


def two_proportion(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> TwoProportion:
    """Compare k2/n2 (later) with k1/n1 (earlier), independent samples.

    z test with the pooled variance (two-sided); p = 1 when the pooled proportion is 0 or 1 (no
    variation to test).  CI: Newcombe (1998) method 10, the square-and-add of the Wilson limits,
    which stays inside [-1, 1] and behaves at 0 and n where the Wald interval collapses.
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both samples need n > 0, got n1={n1}, n2={n2}")
    a, b = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    diff = b.p - a.p
    low = diff - math.sqrt((b.p - b.low) ** 2 + (a.high - a.p) ** 2)
    high = diff + math.sqrt((b.high - b.p) ** 2 + (a.p - a.low) ** 2)
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0.0:
        z, p = 0.0, 1.0
    else:
        z = diff / math.sqrt(var)
        p = min(1.0, 2.0 * (1.0 - NormalDist().cdf(abs(z))))
    return TwoProportion(diff, max(-1.0, low), min(1.0, high), z, p)


def _executions_meta(output: str | Path, sweep: str) -> dict[str, dict[str, str]]:
    """execution_id -> earliest provenance (written_at, model_version, git_sha) over its files."""
    from sweeps.storage.dataset import list_files, read_provenance

    meta: dict[str, dict[str, str]] = {}
    for f in list_files(output, sweep):
        prov = read_provenance(f)
        eid = str(prov.get("execution_id") or "")
        if not eid:
            continue
        when = str(prov.get("written_at") or "")
        cur = meta.get(eid)
        if cur is None or (when and (not cur["started"] or when < cur["started"])):
            meta[eid] = {
                "started": when,
                "model_version": str(prov.get("model_version") or ""),
                "git_sha": str(prov.get("git_sha") or ""),
            }
    return meta


def build_history(df: Any, meta: dict[str, dict[str, str]], sweep: str, alpha: float = 0.05,
                  confidence: float = 0.95) -> History:
    """Pure part: rows (policy, execution_id, lockup, status, cell_id) + provenance -> History."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"--alpha: must be in (0, 1), got {alpha}")
    execs: list[Execution] = []
    for eid, grp in df.groupby("execution_id", sort=False):
        m = meta.get(str(eid), {})
        reps = f"{int(grp['replicate'].min())}..{int(grp['replicate'].max())}" if "replicate" in grp else ""
        execs.append(Execution(str(eid), m.get("started", ""), m.get("model_version", ""), m.get("git_sha", ""),
                               int(len(grp)), int(grp["cell_id"].nunique()), reps))
    # Chronological; executions without provenance time go first, ties by id (deterministic).
    execs.sort(key=lambda e: (e.started, e.execution_id))
    order = {e.execution_id: i for i, e in enumerate(execs)}

    out: list[HistoryRow] = []
    for policy in sorted(str(p) for p in df["policy"].unique()):
        pdf = df[df["policy"].astype(str) == policy]
        prev: Proportion | None = None
        for eid in sorted(pdf["execution_id"].astype(str).unique(), key=order.__getitem__):
            rows = pdf[pdf["execution_id"].astype(str) == eid]
            ok = rows[rows["status"] == "ok"]
            k, n = int(ok["lockup"].astype(bool).sum()), int(len(ok))
            prop = wilson(k, n, confidence)
            change = None
            if prev is not None and n > 0:
                change = two_proportion(prev.k, prev.n, k, n, confidence)
            out.append(HistoryRow(policy, eid, prop, int(len(rows) - n), change,
                                  change is not None and change.p_value < alpha))
            if n > 0:
                prev = prop
    return History(sweep, tuple(execs), tuple(out), alpha)


def load_history(output: str | Path, sweep: str, alpha: float = 0.05, confidence: float = 0.95) -> History:
    from sweeps.storage.dataset import read_sweep

    df = read_sweep(output, sweep, columns=["policy", "execution_id", "cell_id", "replicate", "lockup", "status"])
    return build_history(df, _executions_meta(output, sweep), sweep, alpha, confidence)


def _when(iso: str) -> str:
    return iso.replace("T", " ")[:19].removesuffix("+00:00") if iso else "?"


def format_history(h: History, confidence: float = 0.95) -> str:
    lines = [f"sweep {h.sweep}: {len(h.executions)} execution{'s' if len(h.executions) != 1 else ''}"]
    if not h.executions:
        return lines[0] + " (no rows stored)"
    lines.append(f"  {'execution':<10} {'started (UTC)':<19}  {'model':<8} {'git':<8} {'rows':>6} {'cells':>6}"
                 f"  replicates")
    for e in h.executions:
        lines.append(f"  {e.execution_id[:10]:<10} {_when(e.started):<19}  {e.model_version[:8]:<8} "
                     f"{e.git_sha[:8]:<8} {e.rows:>6} {e.cells:>6}  {e.replicates}")
    lines.append("")
    pct = f"{confidence:.0%}"
    head = (f"{'policy':<24} {'execution':<10} {'started (UTC)':<19} {'n':>6} {'lockups':>7} {'p':>7} "
            f"{pct + ' CI':>17}  change vs previous execution")
    lines += [head, "-" * len(head)]
    for r in h.rows:
        e = r.execution_id
        start = next((_when(x.started) for x in h.executions if x.execution_id == e), "?")
        p = "nan" if r.prop.n == 0 else f"{r.prop.p:.4f}"
        ci = f"[{r.prop.low:.4f}, {r.prop.high:.4f}]"
        change = ""
        if r.change is not None:
            c = r.change
            change = f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}] p={c.p_value:.3g}"
            if r.significant:
                change += "  CHANGED"
        if r.errors:
            change += f"  ({r.errors} rows not ok)"
        lines.append(f"{r.policy[:24]:<24} {e[:10]:<10} {start:<19} {r.prop.n:>6} {r.prop.k:>7} {p:>7} {ci:>17}  {change}")
    lines.append("")
    flagged = h.changes
    lines.append(
        f"{len(flagged)} significant change{'s' if len(flagged) != 1 else ''} (two-proportion z test, p < {h.alpha:g}; "
        f"{h.tests} tests, not corrected for multiple comparisons)"
        + "".join(f"\n  {r.policy}: {r.change.diff:+.4f} at execution {r.execution_id[:10]}" for r in flagged if r.change)
    )
    return "\n".join(lines)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `history` to the `oomsweep` subcommands (the caller maps it to run_history)."""
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


def run_history(args: argparse.Namespace) -> int:
    from sweeps.storage.dataset import list_sweeps

    names = list_sweeps(args.output)
    if args.sweep:
        if args.sweep not in names:
            import difflib

            m = difflib.get_close_matches(args.sweep, names, n=1)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise UsageError(f"--sweep: no sweep {args.sweep!r} in {args.output}{hint}; stored: {', '.join(names) or 'none'}")
        name = args.sweep
    elif len(names) == 1:
        name = names[0]
    else:
        raise UsageError(f"{args.output}: " + (f"holds several sweeps ({', '.join(names)}); choose one with --sweep"
                                                if names else "no sweep results here"))
    if not 0.0 < args.confidence < 1.0:
        raise UsageError(f"--confidence: must be in (0, 1), got {args.confidence}")
    if not 0.0 < args.alpha < 1.0:
        raise UsageError(f"--alpha: must be in (0, 1), got {args.alpha}")
    h = load_history(args.output, name, alpha=args.alpha, confidence=args.confidence)
    print(format_history(h, args.confidence))
    return EXIT_CHANGED if (args.fail_on_change and h.changes) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry, `python -m sweeps.analysis.history OUTPUT --sweep NAME` (same as `oomsweep history`)."""
    import sys

    p = argparse.ArgumentParser(prog="oomsweep")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["history", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_history(args)
    except InputError as exc:
        print(f"oomsweep history: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-policy tables and paired comparisons over the rows of a sweep (pure over pandas DataFrames).

Only rows with status "ok" count: a row whose simulation raised is a bug report, not evidence about
lockups, and is reported separately by the runner.
"""

from __future__ import annotations

import difflib
import math
from typing import Sequence

import pandas as pd

from sweeps.analysis import summary
from sweeps.analysis.stats import PairedDiff, paired_difference
from sweeps.analysis.summary import SUMMARY_COLUMNS
from sweeps.errors import InputError, UnknownColumn
from sweeps.spec.identity import param_column

__all__ = ["TABLE_COLUMNS", "policy_table", "compare_policies", "format_table", "format_text", "resolve_column"]

TABLE_COLUMNS = ("policy", *SUMMARY_COLUMNS)


def _ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    if "status" in df.columns:
        return df[df["status"] == "ok"]
    return df


def resolve_column(df: pd.DataFrame, key: str) -> str:
    """The column of a grid key: as given ("groups.0.sched.nice") or as a key path ("groups[0].sched.nice")."""
    if key in df.columns:
        return key
    col = param_column(key)
    if col in df.columns:
        return col
    m = difflib.get_close_matches(col, [str(c) for c in df.columns], n=1, cutoff=0.6)
    hint = f" (did you mean '{m[0]}'?)" if m else ""
    raise UnknownColumn(f"{key}: no such column{hint}")


def policy_table(df: pd.DataFrame, by: Sequence[str] = (), policies: Sequence[str] = ()) -> pd.DataFrame:
    """Lockup probability (Wilson 95 % interval), stall quantiles, kills and handovers per policy [x keys].

    Columns: *by (as column names), policy, then sweeps.analysis.summary.SUMMARY_COLUMNS; sorted
    by the *by values, then policies in the sweep's order (`policies`), others as first seen.
    """
    by_cols = [resolve_column(df, k) for k in by]
    return summary.policy_table(df, by_cols, policies)


def compare_policies(df: pd.DataFrame, a: str, b: str) -> PairedDiff:
    """P(lockup | a) - P(lockup | b) over the (cell_id, replicate) pairs both policies ran with status ok.

    The pairs share their seed (common random numbers), so the paired interval (Newcombe) and
    McNemar's exact test apply. Rows present for one policy only are left out.
    """
    policies = sorted(str(p) for p in df["policy"].unique()) if "policy" in df else []
    for name in (a, b):
        if name not in policies:
            m = difflib.get_close_matches(name, policies, n=1, cutoff=0.5)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise InputError(f"{name}: no rows for this policy{hint}; policies: {', '.join(policies) or 'none'}")
    if a == b:
        raise InputError(f"{a}: compare two different policies")
    ok = _ok_rows(df)
    key = ["cell_id", "replicate"]
    left = ok.loc[ok["policy"] == a, [*key, "lockup"]].drop_duplicates(key)
    right = ok.loc[ok["policy"] == b, [*key, "lockup"]].drop_duplicates(key)
    pairs = left.merge(right, on=key, suffixes=("_a", "_b"))
    return paired_difference(pairs["lockup_a"].astype(bool).tolist(), pairs["lockup_b"].astype(bool).tolist())


def _cell_text(v: object, column: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int,)) or (hasattr(v, "dtype") and getattr(v, "dtype").kind in "iu"):
        return str(int(v))
    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v, "dtype").kind == "f"):
        x = float(v)
        if column in ("lockup_probability", "ci_low", "ci_high", "handed_over_rate"):
            return f"{x:.4f}"
        if column not in SUMMARY_COLUMNS:  # a grid value: as the sweep file writes it (0.0, 0.02)
            return repr(x)
        if x == int(x) and abs(x) < 1e15 and column not in ("median_stall_s", "p99_stall_s", "mean_kills"):
            return str(int(x))
        return f"{x:.3g}" if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-3) else f"{x:.3f}"
    return str(v)


def format_table(table: pd.DataFrame, fold: Sequence[str] = ()) -> str:
    """Plain-text table: a header, a rule, one line per row; numbers right-aligned.

    `fold`: columns whose values head blocks ("key = value, ...") instead of being columns, so a
    table over two grid keys stays as wide as one without them.
    """
    if fold:
        parts = []
        for key, part in table.groupby(list(fold), sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            parts.append(", ".join(f"{k} = {_cell_text(v, k)}" for k, v in zip(fold, key)))
            parts.append(format_table(part.drop(columns=list(fold))))
            parts.append("")
        return "\n".join(parts).rstrip()
    cols = [str(c) for c in table.columns]
    body = [[_cell_text(v, c) for v, c in zip(row, cols)] for row in table.itertuples(index=False, name=None)]
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]) for c in table.columns
    ]
    widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        parts = [s.rjust(w) if num else s.ljust(w) for s, w, num in zip(cells, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in body)
    if not body:
        out.append("(no rows)")
    return "\n".join(out)


TEXT_WIDTH = 72


def _num(x: object, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(float(x), fmt)


def format_text(table: pd.DataFrame, covers: str = "", by: Sequence[str] = ()) -> str:
    """A plain-text table of at most 72 columns, for a mail to LKML: per policy n, lockups,
    P(lockup) with its Wilson 95 % interval, and the median / p99 of the longest stall (s).

    With `by` columns, one block per combination of their values, headed "key = value, ...".
    `covers` (which execution / block / rows the numbers are of) is the first line.
    """
    head = ("policy", "n", "lockups", "P(lockup) [Wilson 95 %]", "p50 s", "p99 s")
    lines = [covers] if covers else []
    groups = [((), table)] if not by else list(table.groupby(list(by), sort=False, dropna=False))
    for key, part in groups:
        if by:
            key = key if isinstance(key, tuple) else (key,)
            lines += ["", ", ".join(f"{k} = {_cell_text(v, k)}" for k, v in zip(by, key))]
        rows = [[str(r["policy"]), str(int(r["n"])), str(int(r["lockups"])),
                 f"{_num(r['lockup_probability'], '.3f')} [{_num(r['ci_low'], '.3f')}, {_num(r['ci_high'], '.3f')}]",
                 _num(r["median_stall_s"], ".3g"), _num(r["p99_stall_s"], ".3g")]
                for r in part.to_dict("records")]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        spare = TEXT_WIDTH - (sum(widths) + 2 * (len(widths) - 1))
        if spare < 0:  # long policy labels: cut them, keeping their end (the options)
            widths[0] = max(8, widths[0] + spare)
            for r in rows:
                if len(r[0]) > widths[0]:
                    r[0] = "…" + r[0][-(widths[0] - 1):]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        lines += [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]
        if not rows:
            lines.append("(no rows)")
    lines.append("P(lockup) = lockups/n over rows with status ok, with its Wilson 95 %\n"
                 "interval; p50/p99: median and 99th percentile of the longest stall.")
    return "\n".join(lines)

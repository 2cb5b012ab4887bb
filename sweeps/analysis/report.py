"""Per-policy tables and paired comparisons over the rows of a sweep (pure over pandas DataFrames).

Only rows with status "ok" count: a row whose simulation raised is a bug report, not evidence about
lockups, and is reported separately by the runner.
"""

from __future__ import annotations

import difflib
import math
from typing import Sequence

import pandas as pd

from sweeps.analysis.stats import PairedDiff, paired_difference, quantile, wilson
from sweeps.errors import InputError, UnknownColumn
from sweeps.spec.identity import param_column

__all__ = ["TABLE_COLUMNS", "policy_table", "compare_policies", "format_table", "resolve_column"]

TABLE_COLUMNS = (
    "policy",
    "n",
    "lockups",
    "p",
    "ci_low",
    "ci_high",
    "median_stall_s",
    "p99_stall_s",
    "mean_kills",
    "handed_over_rate",
)


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


def _summary(group: pd.DataFrame) -> dict[str, float | int]:
    lockup = group["lockup"].astype(bool)
    n = int(len(group))
    k = int(lockup.sum())
    est = wilson(k, n)
    stall = group["max_stall_s"].tolist() if "max_stall_s" in group else []
    return {
        "n": n,
        "lockups": k,
        "p": est.p,
        "ci_low": est.low,
        "ci_high": est.high,
        "median_stall_s": quantile(stall, 0.5),
        "p99_stall_s": quantile(stall, 0.99),
        "mean_kills": float(group["kills"].mean()) if "kills" in group and n else math.nan,
        "handed_over_rate": float(group["handed_over"].astype(bool).mean())
        if "handed_over" in group and n
        else math.nan,
    }


def policy_table(df: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Lockup probability (Wilson 95 % CI), stall quantiles, kills and handovers per policy [x keys].

    Columns: *by (as column names), policy, n, lockups, p, ci_low, ci_high, median_stall_s,
    p99_stall_s, mean_kills, handed_over_rate; sorted by *by, policy.
    """
    by_cols = [resolve_column(df, k) for k in by]
    keys = [*by_cols, "policy"]
    columns = [*by_cols, *TABLE_COLUMNS]
    ok = _ok_rows(df)
    if ok.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for values, group in ok.groupby(keys, sort=True, dropna=False, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, values)), **_summary(group)})
    table = pd.DataFrame(rows, columns=columns)
    table["policy"] = table["policy"].astype(str)
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


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
        if column in ("p", "ci_low", "ci_high", "handed_over_rate"):
            return f"{x:.4f}"
        if x == int(x) and abs(x) < 1e15 and column not in ("median_stall_s", "p99_stall_s", "mean_kills"):
            return str(int(x))
        return f"{x:.3g}" if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-3) else f"{x:.3f}"
    return str(v)


def format_table(table: pd.DataFrame) -> str:
    """Plain-text table: a header, a rule, one line per row; numbers right-aligned."""
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

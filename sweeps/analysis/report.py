"""Per-policy tables and paired comparisons over the rows of a sweep (pure over pandas DataFrames).

Only rows with status "ok" count: a row whose simulation raised is a bug report, not evidence about
lockups, and is reported separately by the runner.
"""

from __future__ import annotations

import difflib
import math
import textwrap
from typing import Sequence

import pandas as pd

from sweeps.analysis import summary
from sweeps.analysis.stats import (
    PairedDiff,
    PairingGain,
    adjust_p_values,
    paired_difference,
    paired_difference_counts,
    pairing_gain,
)
from sweeps.analysis.summary import (  # noqa: F401  (stall_censored, horizons_from_scenarios: re-exported)
    CENSORING_COLUMNS,
    SUMMARY_COLUMNS,
    Horizon,
    horizons_from_scenarios,
    stall_censored,
)
from sweeps.errors import InputError, UnknownColumn
from sweeps.spec.identity import param_column

__all__ = [
    "TABLE_COLUMNS",
    "policy_table",
    "compare_policies",
    "compare_pairs",
    "compare_by",
    "compare_pairing_gain",
    "stall_censored",
    "stored_horizon",
    "horizons_from_scenarios",
    "format_table",
    "format_text",
    "resolve_column",
]

TABLE_COLUMNS = ("policy", *SUMMARY_COLUMNS, *CENSORING_COLUMNS)


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


def stored_horizon(output, sweep: str) -> float | None:
    """horizon_s of a stored sweep, read from the first row's scenario_json (one row of one file):
    the horizon is the same in every cell unless the sweep varies it, and then it is a key column."""
    import json

    import pyarrow.parquet as pq

    import pyarrow as pa

    from sweeps.storage.dataset import readable_files

    for f in readable_files(output, sweep, on_bad=None):  # the readers name the bad files
        try:
            batch = next(pq.ParquetFile(f).iter_batches(batch_size=1, columns=["scenario_json"]), None)
        except (pa.ArrowException, OSError):  # damaged pages under a sound footer: another file will do
            continue
        if batch is not None and batch.num_rows:
            try:
                return float(json.loads(batch.column(0)[0].as_py())["horizon_s"])
            except (TypeError, ValueError, KeyError):
                return None
    return None


def policy_table(
    df: pd.DataFrame,
    by: Sequence[str] = (),
    policies: Sequence[str] = (),
    horizon_s: Horizon = None,
) -> pd.DataFrame:
    """Lockup probability (Wilson 95 % interval), stall quantiles, kills and handovers per policy [x keys].

    Columns: *by (as column names), policy, then sweeps.analysis.summary.SUMMARY_COLUMNS, then
    censored (rows whose stall the horizon cut off, see stall_censored) and median_stall_km_s (the
    Kaplan-Meier median that treats those as censored); sorted by the *by values, then policies in
    the sweep's order (`policies`), others as first seen.
    """
    by_cols = [resolve_column(df, k) for k in by]
    table = summary.policy_table(df, by_cols, policies, horizon_s=horizon_s, censoring=True)
    return table.astype({c: float for c in CENSORING_COLUMNS}) if table.empty else table


def compare_pairs(df: pd.DataFrame, a: str, b: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The (cell_id, replicate) pairs both policies ran with status ok: lockup_a, lockup_b, *extra."""
    _check_policies(df, a, b)
    ok = _ok_rows(df)
    key = ["cell_id", "replicate"]
    left = ok.loc[ok["policy"] == a, [*key, *extra, "lockup"]].drop_duplicates(key)
    right = ok.loc[ok["policy"] == b, [*key, "lockup"]].drop_duplicates(key)
    return left.merge(right, on=key, suffixes=("_a", "_b"))


def _table_of_pairs(pairs: pd.DataFrame) -> tuple[int, int, int, int]:
    la, lb = pairs["lockup_a"].astype(bool), pairs["lockup_b"].astype(bool)
    return int((la & lb).sum()), int((la & ~lb).sum()), int((~la & lb).sum()), int((~la & ~lb).sum())


def compare_pairing_gain(df: pd.DataFrame, a: str, b: str) -> PairingGain:
    """How much the shared seeds cut the variance of P(a) - P(b) on this sweep (stats.pairing_gain)."""
    return pairing_gain(*_table_of_pairs(compare_pairs(df, a, b)))


def compare_by(df: pd.DataFrame, a: str, b: str, by: str, method: str = "holm") -> pd.DataFrame:
    """The paired comparison per value of one key, with McNemar p-values adjusted over those values
    (``method``: "holm" controls the family-wise error rate, "fdr_bh" the false discovery rate).

    Columns: <key column>, n_pairs, diff, ci_low, ci_high, a_only, b_only, p, p_adj, significant
    (p_adj <= 0.05). The intervals are per-value 95 % intervals, not adjusted.
    """
    if method not in ("holm", "fdr_bh"):
        raise InputError(f"{method}: the adjustment is 'holm' or 'fdr_bh'")
    col = resolve_column(df, by)
    pairs = compare_pairs(df, a, b, extra=[col])
    rows = []
    for value, group in pairs.groupby(col, sort=True, dropna=False, observed=True):
        d = paired_difference_counts(*_table_of_pairs(group))
        rows.append({col: value, "n_pairs": d.n_pairs, "diff": d.diff, "ci_low": d.low, "ci_high": d.high,
                     "a_only": d.b, "b_only": d.c, "p": d.p_value})
    table = pd.DataFrame(rows, columns=[col, "n_pairs", "diff", "ci_low", "ci_high", "a_only", "b_only", "p"])
    table["p_adj"] = adjust_p_values(table["p"].tolist(), method)
    table["significant"] = table["p_adj"] <= 0.05
    return table


def _check_policies(df: pd.DataFrame, a: str, b: str) -> None:
    policies = sorted(str(p) for p in df["policy"].unique()) if "policy" in df else []
    for name in (a, b):
        if name not in policies:
            m = difflib.get_close_matches(name, policies, n=1, cutoff=0.5)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise InputError(f"{name}: no rows for this policy{hint}; policies: {', '.join(policies) or 'none'}")
    if a == b:
        raise InputError(f"{a}: compare two different policies")


def compare_policies(df: pd.DataFrame, a: str, b: str) -> PairedDiff:
    """P(lockup | a) - P(lockup | b) over the (cell_id, replicate) pairs both policies ran with status ok.

    The pairs share their seed (common random numbers), so the paired interval (Newcombe) and
    McNemar's exact test apply. Rows present for one policy only are left out.
    """
    pairs = compare_pairs(df, a, b)
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
        if math.isinf(x):
            return "> horizon" if column.endswith("_km_s") else str(x)
        if column in ("lockup_probability", "ci_low", "ci_high", "handed_over_rate", "diff"):
            return f"{x:.4f}"
        if column in ("p", "p_adj"):
            return f"{x:.4f}" if x >= 1e-4 or x == 0 else f"{x:.1e}"
        if column not in TABLE_COLUMNS:  # a grid value: as the sweep file writes it (0.0, 0.02)
            return repr(x)
        if x == int(x) and abs(x) < 1e15 and column not in ("median_stall_s", "p99_stall_s", "mean_kills",
                                                              "median_stall_km_s"):
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
    lines = textwrap.wrap(covers, TEXT_WIDTH, break_on_hyphens=False) if covers else []
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

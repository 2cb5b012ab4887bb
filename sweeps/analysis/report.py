"""Per-policy tables and paired comparisons over the rows of a sweep (pure over pandas DataFrames).

Only rows with status "ok" count: a row whose simulation raised is a bug report, not evidence about
lockups, and is reported separately by the runner.
"""

from __future__ import annotations

import difflib
import math
from typing import Sequence

import pandas as pd

from sweeps.analysis.stats import (
    PairedDiff,
    PairingGain,
    adjust_p_values,
    censored_quantile,
    paired_difference,
    paired_difference_counts,
    pairing_gain,
    quantile,
    wilson,
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
    "resolve_column",
]

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
    "censored",
    "median_stall_km_s",
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


def horizons_from_scenarios(df: pd.DataFrame) -> dict[str, float]:
    """cell_id -> horizon_s, read from each cell's scenario_json (one parse per cell)."""
    import json

    if "scenario_json" not in df.columns or "cell_id" not in df.columns:
        return {}
    cells = df.drop_duplicates("cell_id")[["cell_id", "scenario_json"]]
    out = {}
    for cid, text in cells.itertuples(index=False, name=None):
        try:
            out[str(cid)] = float(json.loads(text)["horizon_s"])
        except (TypeError, ValueError, KeyError):
            continue
    return out


def stored_horizon(output, sweep: str) -> float | None:
    """horizon_s of a stored sweep, read from the first row's scenario_json (one row of one file):
    the horizon is the same in every cell unless the sweep varies it, and then it is a key column."""
    import json

    import pyarrow.parquet as pq

    from sweeps.storage.dataset import list_files

    for f in list_files(output, sweep):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1, columns=["scenario_json"]):
            if batch.num_rows:
                try:
                    return float(json.loads(batch.column(0)[0].as_py())["horizon_s"])
                except (TypeError, ValueError, KeyError):
                    return None
    return None


def stall_censored(df: pd.DataFrame, horizon_s: float | dict[str, float] | None = None) -> pd.Series | None:
    """Which rows' max_stall_s was cut off by the horizon (right-censored): the run reached its
    horizon (sim_time_s >= horizon_s) while the OOM was unresolved (a lockup, or a victim still
    pending). Such a stall lasted at least max_stall_s. None when the horizon is unknown.

    ``horizon_s``: one horizon for every row, a dict cell_id -> horizon, or None to read it from a
    ``horizon_s`` key column or the rows' scenario_json.
    """
    if "sim_time_s" not in df.columns:
        return None
    if "horizon_s" in df.columns:  # a sweep that varies the horizon: each row says its own
        h = df["horizon_s"].astype(float)
    else:
        if horizon_s is None:
            horizon_s = horizons_from_scenarios(df)
            if not horizon_s:
                return None
        if isinstance(horizon_s, dict):
            h = df["cell_id"].astype(str).map(horizon_s).astype(float)
        else:
            h = pd.Series(float(horizon_s), index=df.index)
    unresolved = df["lockup"].astype(bool)
    if "victims_pending_at_end" in df.columns:
        unresolved = unresolved | (df["victims_pending_at_end"].fillna(0) > 0)
    return (df["sim_time_s"].astype(float) >= h - 1e-9) & unresolved


def _summary(group: pd.DataFrame, censored: pd.Series | None = None) -> dict[str, float | int]:
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
        # Kaplan-Meier median: a stall cut off by the horizon counts as "at least this long";
        # inf when more than half the stalls were cut off (the median is beyond the horizon).
        "censored": int(censored.loc[group.index].sum()) if censored is not None else math.nan,
        "median_stall_km_s": censored_quantile(stall, censored.loc[group.index].tolist(), 0.5)
        if censored is not None and stall
        else math.nan,
    }


def policy_table(
    df: pd.DataFrame, by: Sequence[str] = (), horizon_s: float | dict[str, float] | None = None
) -> pd.DataFrame:
    """Lockup probability (Wilson 95 % CI), stall quantiles, kills and handovers per policy [x keys].

    Columns: *by (as column names), policy, n, lockups, p, ci_low, ci_high, median_stall_s,
    p99_stall_s (of the observed max_stall_s), mean_kills, handed_over_rate, censored (rows whose
    stall the horizon cut off, see stall_censored) and median_stall_km_s (Kaplan-Meier median that
    treats those as censored; nan when the horizon is unknown); sorted by *by, policy.
    """
    by_cols = [resolve_column(df, k) for k in by]
    keys = [*by_cols, "policy"]
    columns = [*by_cols, *TABLE_COLUMNS]
    ok = _ok_rows(df)
    if ok.empty:
        return pd.DataFrame(columns=columns)
    censored = stall_censored(ok, horizon_s)
    rows = []
    for values, group in ok.groupby(keys, sort=True, dropna=False, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, values)), **_summary(group, censored)})
    table = pd.DataFrame(rows, columns=columns)
    table["policy"] = table["policy"].astype(str)
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


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
        if column in ("p", "ci_low", "ci_high", "handed_over_rate", "diff", "p_adj"):
            return f"{x:.4f}" if column not in ("p", "p_adj") or x >= 1e-4 or x == 0 else f"{x:.1e}"
        if x == int(x) and abs(x) < 1e15 and column not in ("median_stall_s", "p99_stall_s", "mean_kills",
                                                              "median_stall_km_s"):
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

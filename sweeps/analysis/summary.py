"""The one per-policy summary: the numbers `report`, MLflow (`tracking`) and `calibrate` show.

A `Tally` keeps running totals of some rows (all statuses): counts, sums, and the ok rows'
`max_stall_s` with a censoring flag; `summary()` turns it into the SUMMARY_COLUMNS. It is filled
from a DataFrame of rows (`add_rows`, one batch at a time if need be) and merged across groups
(`merge`), so the streaming scan of `oomsweep log` and the in-memory table of `report` compute the
same numbers with the same arithmetic. Only rows with status "ok" count in n: a row whose
simulation raised is a bug report, not evidence about lockups; it is counted in `failed_rows`.

A stall is taken as censored (still running when observation stopped) when its row locked up:
the model records the longest stall up to the horizon, not whether it ended, and a lockup's
stall in the shipped scenarios runs to the horizon (e.g. 119.9 s of 120 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sweeps.analysis.stats import KaplanMeier, kaplan_meier, wilson

__all__ = [
    "SUMMARY_COLUMNS",
    "COUNT_COLUMNS",
    "INTERVAL_NOTE",
    "Tally",
    "summarise",
    "policy_table",
    "order_policies",
]

# The columns of a per-policy (or per-cell) summary, everywhere under these names.
SUMMARY_COLUMNS = (
    "n",
    "lockups",
    "lockup_probability",
    "ci_low",
    "ci_high",
    "median_stall_s",
    "p99_stall_s",
    "mean_kills",
    "handed_over_rate",
    "failed_rows",
)
COUNT_COLUMNS = ("n", "lockups", "failed_rows")  # integers, never floats
INTERVAL_NOTE = "ci_low..ci_high: Wilson 95 % interval of lockup_probability; n counts rows with status ok"


def _sorted_quantile(xs: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile (as sweeps.analysis.stats.quantile) of a sorted, NaN-free array."""
    if not len(xs):
        return math.nan
    pos = q * (len(xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(xs) - 1)
    frac = pos - i
    lo, hi = float(xs[i]), float(xs[j])
    return lo + (hi - lo) * frac if frac else lo


@dataclass
class Tally:
    """Running totals of a group of rows; `summary()` gives the SUMMARY_COLUMNS."""

    rows: int = 0
    ok: int = 0
    lockups: int = 0
    handed_over: int = 0
    kills_sum: float = 0.0
    kills_n: int = 0
    stalls: list = field(default_factory=list)  # float64 arrays of the ok rows' max_stall_s
    censored: list = field(default_factory=list)  # bool arrays beside `stalls`: the row locked up

    def add_rows(self, frame: pd.DataFrame) -> "Tally":
        """Count the rows of `frame` (columns status, lockup, max_stall_s, kills, handed_over; any
        may be absent). Returns self."""
        self.rows += len(frame)
        ok = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
        if not len(ok):
            return self
        lockup = ok["lockup"].astype(bool).to_numpy()
        self.ok += len(ok)
        self.lockups += int(lockup.sum())
        if "handed_over" in ok.columns:
            self.handed_over += int(ok["handed_over"].astype(bool).sum())
        if "kills" in ok.columns:
            kills = ok["kills"].astype(float)
            self.kills_sum += float(kills.fillna(0.0).sum())
            self.kills_n += int(kills.notna().sum())
        if "max_stall_s" in ok.columns:
            self.stalls.append(ok["max_stall_s"].to_numpy(dtype=float, copy=True))
            self.censored.append(lockup.copy())
        return self

    def merge(self, other: "Tally") -> "Tally":
        self.rows += other.rows
        self.ok += other.ok
        self.lockups += other.lockups
        self.handed_over += other.handed_over
        self.kills_sum += other.kills_sum
        self.kills_n += other.kills_n
        self.stalls += other.stalls
        self.censored += other.censored
        return self

    def stall_values(self) -> np.ndarray:
        return np.concatenate(self.stalls) if self.stalls else np.empty(0)

    def stall_censored(self) -> np.ndarray:
        return np.concatenate(self.censored) if self.censored else np.empty(0, dtype=bool)

    def survival(self) -> KaplanMeier:
        """Kaplan–Meier curve of the ok rows' max_stall_s, lockup stalls censored."""
        return kaplan_meier(self.stall_values(), self.stall_censored())

    def summary(self) -> dict[str, Any]:
        n, k = self.ok, self.lockups
        est = wilson(k, n)
        stalls = self.stall_values()
        stalls = np.sort(stalls[~np.isnan(stalls)])
        return {
            "n": int(n),
            "lockups": int(k),
            "lockup_probability": est.p,
            "ci_low": est.low,
            "ci_high": est.high,
            "median_stall_s": _sorted_quantile(stalls, 0.5),
            "p99_stall_s": _sorted_quantile(stalls, 0.99),
            "mean_kills": (self.kills_sum / self.kills_n if self.kills_n else math.nan) if n else math.nan,
            "handed_over_rate": self.handed_over / n if n else math.nan,
            "failed_rows": int(self.rows - n),
        }


def summarise(frame: pd.DataFrame) -> dict[str, Any]:
    """SUMMARY_COLUMNS of the rows in `frame`."""
    return Tally().add_rows(frame).summary()


def order_policies(found: Sequence[str], declared: Sequence[str] = ()) -> list[str]:
    """The sweep's order (`declared`) for the policies it names, then any others in order found."""
    found = [str(p) for p in dict.fromkeys(found)]
    return [p for p in declared if p in found] + [p for p in found if p not in declared]


def policy_table(rows: pd.DataFrame, by: Sequence[str] = (), policies: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (*by, policy): *by, policy, SUMMARY_COLUMNS.

    `by` are column names; their values are sorted. Policies come in the sweep's order
    (`policies`), then any other in the order first seen. Counts are integers.
    """
    keys = [*by, "policy"]
    columns = [*keys, *SUMMARY_COLUMNS]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for values, group in rows.groupby(keys, sort=False, dropna=False, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        records.append({**dict(zip(keys, values)), **summarise(group)})
    table = pd.DataFrame(records, columns=columns)
    table["policy"] = table["policy"].astype(str)
    order = {p: i for i, p in enumerate(order_policies(table["policy"], policies))}
    table["_order"] = table["policy"].map(order)
    table = table.sort_values([*by, "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    for c in COUNT_COLUMNS:
        table[c] = table[c].astype("int64")
    return table

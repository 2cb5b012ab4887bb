"""The one per-policy summary: the numbers `report`, MLflow (`tracking`) and `calibrate` show.

A `Tally` keeps running totals of some rows (all statuses): counts, sums, and the ok rows'
`max_stall_s` with a censoring flag; `summary()` turns it into the SUMMARY_COLUMNS. It is filled
from a DataFrame of rows (`add_rows`, one batch at a time if need be) and merged across groups
(`merge`), so the streaming scan of `oomsweep log` and the in-memory table of `report` compute the
same numbers with the same arithmetic. Only rows with status "ok" count in n: a row whose
simulation raised is a bug report, not evidence about lockups; it is counted in `failed_rows`.

The one censoring rule lives here too (`stall_censored`): a row's max_stall_s is censored (the
stall lasted at least that long) when the run reached its horizon with the OOM unresolved (a
lockup, or a victim still pending). The model records the longest stall up to the horizon, not
whether it ended. `Tally` applies it as it counts, so the `censored` / `median_stall_km_s`
columns of `report` and `run` and the Kaplan–Meier curves of the plots (MLflow's included) are
one computation. Before, the curves censored every lockup row instead: a row still pending at the
horizon without a lockup, or a lockup whose run ended early on a panic, moved the plotted median
away from the table's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from sweeps.analysis.stats import KaplanMeier, censored_quantile, kaplan_meier, wilson

__all__ = [
    "SUMMARY_COLUMNS",
    "COUNT_COLUMNS",
    "CENSORING_COLUMNS",
    "INTERVAL_NOTE",
    "Horizon",
    "Tally",
    "stall_censored",
    "horizons_from_scenarios",
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
# Beside them where the horizon is known (report, run): rows whose stall the horizon cut off, and
# the Kaplan-Meier median that treats those as censored.
CENSORING_COLUMNS = ("censored", "median_stall_km_s")
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


# One horizon for every row, per cell (cell_id -> horizon_s), or None: read it from the rows (a
# `horizon_s` key column, else their scenario_json).
Horizon = float | Mapping[str, float] | None


def horizons_from_scenarios(df: pd.DataFrame) -> dict[str, float]:
    """cell_id -> horizon_s, read from each cell's scenario_json (one parse per cell)."""
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


def stall_censored(df: pd.DataFrame, horizon_s: Horizon = None) -> pd.Series | None:
    """Which rows' max_stall_s was cut off by the horizon (right-censored): the run reached its
    horizon (sim_time_s >= horizon_s) while the OOM was unresolved (a lockup, or a victim still
    pending). Such a stall lasted at least max_stall_s. None when the horizon is unknown.

    The only statement of the rule: `Tally` (so report, run, MLflow and the plots) applies it.
    ``horizon_s``: one horizon for every row, a dict cell_id -> horizon, or None to read it from a
    ``horizon_s`` key column or the rows' scenario_json. A key column wins: a sweep that varies the
    horizon has each row say its own.
    """
    if "sim_time_s" not in df.columns:
        return None
    if "horizon_s" in df.columns:
        h = df["horizon_s"].to_numpy(dtype=float)
    else:
        if horizon_s is None:
            horizon_s = horizons_from_scenarios(df)
            if not horizon_s:
                return None
        if isinstance(horizon_s, Mapping):
            h = df["cell_id"].astype(str).map(dict(horizon_s)).to_numpy(dtype=float)
        else:
            h = float(horizon_s)
    reached = df["sim_time_s"].to_numpy(dtype=float) >= h - 1e-9  # numpy: Tally calls this per group
    return pd.Series(reached & _unresolved(df), index=df.index)


def _unresolved(df: pd.DataFrame) -> np.ndarray:
    """Rows whose OOM was unresolved at the end of the run: a lockup, or a victim still pending."""
    unresolved = df["lockup"].astype(bool).to_numpy()
    if "victims_pending_at_end" in df.columns:
        unresolved = unresolved | (df["victims_pending_at_end"].to_numpy(dtype=float, na_value=0.0) > 0)
    return unresolved


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
    censored: list = field(default_factory=list)  # bool arrays beside `stalls`: stall_censored's flags
    horizon_known: bool = True  # False once rows came whose horizon (or sim_time_s) was unknown

    def add_rows(self, frame: pd.DataFrame, horizon_s: Horizon = None) -> "Tally":
        """Count the rows of `frame` (columns status, lockup, max_stall_s, kills, handed_over,
        sim_time_s, victims_pending_at_end; any may be absent). `horizon_s` as stall_censored
        takes it. Returns self."""
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
            cut = stall_censored(ok, horizon_s)
            if cut is None:
                # Unknown horizon: taken as reached (a run ends before it only on a panic), so the
                # curves still censor the unresolved rows; the table says it does not know.
                self.horizon_known = False
                self.censored.append(_unresolved(ok))
            else:
                self.censored.append(cut.to_numpy(dtype=bool, copy=True))
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
        self.horizon_known = self.horizon_known and other.horizon_known
        return self

    def stall_values(self) -> np.ndarray:
        return np.concatenate(self.stalls) if self.stalls else np.empty(0)

    def stall_censored(self) -> np.ndarray:
        return np.concatenate(self.censored) if self.censored else np.empty(0, dtype=bool)

    def survival(self) -> KaplanMeier:
        """Kaplan–Meier curve of the ok rows' max_stall_s, censored as stall_censored says."""
        return kaplan_meier(self.stall_values(), self.stall_censored())

    def censoring(self) -> dict[str, Any]:
        """The CENSORING_COLUMNS: censored rows and the Kaplan–Meier median stall (inf: more than
        half were cut off); nan for both when the horizon of some row was unknown."""
        stalls = self.stall_values()
        if not self.horizon_known or not len(stalls):
            return {"censored": math.nan, "median_stall_km_s": math.nan}
        cut = self.stall_censored()
        return {"censored": int(cut.sum()),
                "median_stall_km_s": censored_quantile(stalls.tolist(), cut.tolist(), 0.5)}

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


def summarise(frame: pd.DataFrame, horizon_s: Horizon = None, censoring: bool = False) -> dict[str, Any]:
    """SUMMARY_COLUMNS of the rows in `frame` (then CENSORING_COLUMNS with `censoring`)."""
    tally = Tally().add_rows(frame, horizon_s)
    return {**tally.summary(), **(tally.censoring() if censoring else {})}


def order_policies(found: Sequence[str], declared: Sequence[str] = ()) -> list[str]:
    """The sweep's order (`declared`) for the policies it names, then any others in order found."""
    found = [str(p) for p in dict.fromkeys(found)]
    return [p for p in declared if p in found] + [p for p in found if p not in declared]


def policy_table(rows: pd.DataFrame, by: Sequence[str] = (), policies: Sequence[str] = (),
                 horizon_s: Horizon = None, censoring: bool = False) -> pd.DataFrame:
    """One row per (*by, policy): *by, policy, SUMMARY_COLUMNS (then CENSORING_COLUMNS with
    `censoring`; `horizon_s` as stall_censored takes it).

    `by` are column names; their values are sorted. Policies come in the sweep's order
    (`policies`), then any other in the order first seen. Counts are integers.
    """
    keys = [*by, "policy"]
    columns = [*keys, *SUMMARY_COLUMNS, *(CENSORING_COLUMNS if censoring else ())]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for values, group in rows.groupby(keys, sort=False, dropna=False, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        records.append({**dict(zip(keys, values)), **summarise(group, horizon_s, censoring)})
    table = pd.DataFrame(records, columns=columns)
    table["policy"] = table["policy"].astype(str)
    order = {p: i for i, p in enumerate(order_policies(table["policy"], policies))}
    table["_order"] = table["policy"].map(order)
    table = table.sort_values([*by, "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    for c in COUNT_COLUMNS:
        table[c] = table[c].astype("int64")
    return table

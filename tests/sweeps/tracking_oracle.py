"""The MLflow summary as sweeps.tracking.mlflow_log computed it before the streaming scan: every row in pandas.

Kept as the oracle that the streaming summary (sweeps.tracking.mlflow_log._Summary) must equal, bit for bit, in
tests/sweeps/test_tracking.py and benchmarks/bench_backfill_memory.py; nothing in sweeps/ uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from sweeps.storage import dataset as storage
from sweeps.analysis.stats import quantile, wilson
from sweeps.tracking.mlflow_log import FAILED_METRIC, METRICS


def read_all_rows(output, sweep: str) -> pd.DataFrame:
    """Every column but scenario_json of every row, as log_sweep read them before: strings as str."""
    import pyarrow.parquet as pq

    names: dict = {}
    for path in storage.list_files(output, sweep):
        names.update(dict.fromkeys(pq.read_schema(path).names))
    rows = storage.read_sweep(output, sweep, columns=[c for c in names if c != "scenario_json"])
    for col in ("policy", "sweep", "status", "cell_id"):
        rows[col] = rows[col].astype(str)
    return rows.reset_index(drop=True)


def _stall_values(ok: pd.DataFrame) -> list[float]:
    return ok["max_stall_s"].astype(float).tolist()


def metrics_of(group: pd.DataFrame) -> dict[str, float]:
    """The METRICS of one group of rows; only status == "ok" rows count, failures are reported apart."""
    status = group["status"] if "status" in group.columns else pd.Series("ok", index=group.index)
    ok = group[status == "ok"]
    n = len(ok)
    k = int(ok["lockup"].astype(bool).sum())
    prop = wilson(k, n)
    stalls = _stall_values(ok)
    return {
        "lockup_probability": prop.p,
        "ci_low": prop.low,
        "ci_high": prop.high,
        "n": float(n),
        "lockups": float(k),
        "median_stall_s": quantile(stalls, 0.5),
        "p99_stall_s": quantile(stalls, 0.99),
        "mean_kills": float(ok["kills"].astype(float).mean()) if n else math.nan,
        "handed_over_rate": float(ok["handed_over"].astype(bool).mean()) if n else math.nan,
        FAILED_METRIC: float(len(group) - n),
    }


def summarise(rows: pd.DataFrame, by: Sequence[str] = ("policy",)) -> pd.DataFrame:
    """One row per group with the columns *by, METRICS..., failed_rows (sorted by *by)."""
    by = list(by)
    records = []
    for key, group in rows.groupby(by, sort=True, dropna=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        records.append({**dict(zip(by, key)), **metrics_of(group)})
    return pd.DataFrame.from_records(records, columns=[*by, *METRICS, FAILED_METRIC])


def cell_summary(rows: pd.DataFrame, grid: Sequence[str]) -> pd.DataFrame:
    """Per (cell, policy): cell_index, grid values and METRICS; the dataset recorded with log_input."""
    table = summarise(rows, ("cell_id", "policy"))
    cells = rows.groupby("cell_id", sort=False)[["cell_index", *grid]].first().reset_index()
    table = cells.merge(table, on="cell_id", how="right")
    return table.sort_values(["cell_index", "policy"], kind="stable").reset_index(drop=True)

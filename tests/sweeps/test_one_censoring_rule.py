"""`oomsweep run`/`report` (report.policy_table) and MLflow (the streaming scan, plan_log) read the
same rows through one Tally: the same k/n, the same Wilson interval, the same censoring.

Before, the Kaplan–Meier curves of the plots (MLflow's and `report --plots`) censored every row
that locked up, while the table's `censored` / `median_stall_km_s` censored the rows that reached
the horizon unresolved: on the rows below the curve's median was 15 s and the table's 30 s.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.analysis.report import policy_table
from sweeps.analysis.stats import KaplanMeier, wilson
from sweeps.storage import dataset as storage
from sweeps.tracking import mlflow_log as tracking

SWEEP = "censoring"
HORIZON_S = 120.0


def rows() -> pd.DataFrame:
    """Policy p: each way a stall can end or be cut off; policy q: two plain rows."""
    ways = [  # lockup, max_stall_s, sim_time_s, victims_pending_at_end, status
        (True, 100.0, HORIZON_S, 1, "ok"),   # a lockup at the horizon: censored
        (False, 15.0, HORIZON_S, 1, "ok"),   # no lockup, a victim still pending at the horizon: censored
        (True, 30.0, 50.0, 0, "ok"),         # a lockup, then a panic ended the run early: observed
        (False, 1.0, HORIZON_S, 0, "ok"),    # resolved: observed
        (False, 2.0, HORIZON_S, 0, "ok"),
        (True, 119.0, HORIZON_S, 1, "error"),  # a failed row: counts nowhere but failed_rows
    ]
    records = [{"policy": "p", "lockup": lk, "max_stall_s": st, "sim_time_s": t, "victims_pending_at_end": v,
                "status": s} for lk, st, t, v, s in ways]
    records += [{"policy": "q", "lockup": False, "max_stall_s": x, "sim_time_s": HORIZON_S,
                 "victims_pending_at_end": 0, "status": "ok"} for x in (0.5, 0.7)]
    frame = pd.DataFrame.from_records(records)
    frame["sweep"] = SWEEP
    frame["cell_id"] = "00000000000000c0"
    frame["cell_index"] = 0
    frame["replicate"] = frame.groupby("policy").cumcount()
    frame["kills"], frame["handed_over"] = 1, False
    frame["scenario_json"] = json.dumps({"horizon_s": HORIZON_S, "lockup_after_s": 20.0})
    frame["execution_id"], frame["model_version"], frame["wall_s"] = "exec-1", "0.1.0", 0.01
    return frame


def write_dataset(output: Path, frame: pd.DataFrame) -> None:
    """The storage layout, written directly so the rows are exactly these."""
    for (sweep, policy), group in frame.groupby(["sweep", "policy"]):
        part = storage.partition_dir(output, sweep, policy)
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(group.drop(columns=["sweep", "policy"]), preserve_index=False),
                       part / f"{uuid.uuid4().hex}.parquet")


def km_median(km: KaplanMeier) -> float:
    """The curve's median: the first step at or below 1/2 (inf if it never gets there)."""
    return next((t for t, s in zip(km.t, km.s) if s <= 0.5), math.inf)


def test_report_run_and_mlflow_count_and_censor_the_same_rows(tmp_path: Path) -> None:
    frame = rows()
    write_dataset(tmp_path, frame)
    table = policy_table(frame, horizon_s=HORIZON_S).set_index("policy")  # what run and report print
    scanned = tracking._scan(tmp_path, SWEEP, None, "exec-1")  # no spec: the horizon from the stored rows
    plan = tracking.plan_log(scanned, None, {"git_sha": "0" * 40}, sweep=SWEEP, execution_id="exec-1",
                             experiment="e", max_cell_runs=10)
    children = {c.params["policy"]: c.metrics for c in plan.children if c.tags[tracking.TAG_ROLE] == "policy"}

    p = table.loc["p"]
    assert (p["lockups"], p["n"], p["failed_rows"]) == (2, 5, 1)
    w = wilson(2, 5)
    assert (p["lockup_probability"], p["ci_low"], p["ci_high"]) == (w.p, w.low, w.high)
    assert (p["censored"], p["median_stall_km_s"]) == (2, 30.0)  # events 1, 2, 30; 15 and 100 cut off
    for policy, row in table.iterrows():
        child = children[policy]
        for m in ("n", "lockups", "lockup_probability", "ci_low", "ci_high"):
            assert child[m] == row[m], (policy, m)
        key = tracking.mlflow_key(f"lockup_p/{policy}")
        assert plan.parent.metrics[f"{key}.n"] == row["n"]
        for suffix, column in (("", "lockup_probability"), (".ci_low", "ci_low"), (".ci_high", "ci_high")):
            assert plan.parent.metrics[key + suffix] == tracking.headline(row[column])
        km = scanned.policy_group(policy).survival()  # the curve MLflow plots
        assert km.n == row["n"] and km.censored == row["censored"]
        assert km_median(km) == row["median_stall_km_s"]

"""A real sweep end to end: real local Ray, real Parquet, real sqlite MLflow, all in a temp dir."""

from __future__ import annotations

import io

import duckdb
import pandas as pd
import pytest

from sweeps.storage import schema as S
from sweeps.storage import dataset as storage
from sweeps.run.runner import RunOptions, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OUTCOME_COLUMNS = [f.name for f in S.OUTCOME_FIELDS]


def _run(path, **kw):
    out, err = io.StringIO(), io.StringIO()
    res = run_sweep(path, RunOptions(**kw), stdout=out, stderr=err)
    return res, out.getvalue(), err.getvalue()


def test_quick_sweep_end_to_end(ray_session, write_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(
        tmp_path,
        grid={"victim.sched_at_handover": ["unchanged", "idle"], "machine.rt_runtime_share": [True, False]},
        replicates=5,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res, out, err = _run(path, mlflow_uri=uri)
    assert res.exit_code == 0, err
    assert "MLflow tracking failed" not in err

    df = storage.read_sweep(tmp_path / "results", "tiny")
    assert len(df) == 4 * 2 * 5 == res.rows_run  # cells × policies × replicates
    assert not df.duplicated(["cell_id", "policy", "replicate"]).any()
    assert (df["status"] == "ok").all() and (df["error"] == "").all()
    assert df["worker_pid"].nunique() >= 1 and (df["node_id"] != "").all()
    assert set(df["execution_id"]) == {res.execution_id}
    # Common random numbers: the seed of a replicate does not depend on the policy.
    seeds = df.pivot_table(index=["cell_id", "replicate"], columns="policy", values="seed")
    assert (seeds["upstream_4_19"] == seeds["timeout_backoff"]).all()
    # Typed parameter columns.
    assert df["machine.rt_runtime_share"].dtype == bool
    assert set(df["victim.sched_at_handover"]) == {"unchanged", "idle"}
    assert any(c.startswith("cpu_s.") for c in df.columns)

    # The printed table matches a recomputation from the Parquet with DuckDB.
    glob = str(tmp_path / "results" / "**" / "*.parquet")
    rows = duckdb.sql(
        f"""select policy, count(*) as n, sum(lockup::int) as lockups,
                   median(max_stall_s) as median_stall_s, avg(kills) as mean_kills
            from read_parquet('{glob}', hive_partitioning=true)
            where sweep = 'tiny' and status = 'ok' group by policy order by policy"""
    ).fetchall()
    table = res.table.set_index("policy")
    assert [r[0] for r in rows] == sorted(table.index)
    for policy, n, lockups, median_stall, mean_kills in rows:
        assert table.loc[policy, "n"] == n == 20
        assert table.loc[policy, "lockups"] == lockups
        assert table.loc[policy, "lockup_probability"] == pytest.approx(lockups / n)
        assert table.loc[policy, "median_stall_s"] == pytest.approx(median_stall)
        assert table.loc[policy, "mean_kills"] == pytest.approx(mean_kills)
    for policy in rows:
        assert policy[0] in out  # the table was printed

    # MLflow: one parent for this execution, one child per policy with the right metrics.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    parents = client.search_runs([exp.experiment_id], f"tags.`oomsweep.execution_id` = '{res.execution_id}'")
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    per_policy = {}
    for r in children:
        if "lockup_probability" in r.data.metrics and r.data.metrics.get("n") == 20:
            per_policy.setdefault(r.data.tags.get("mlflow.runName", r.info.run_name), r)
    assert len(per_policy) >= 2
    ps = sorted(r.data.metrics["lockup_probability"] for r in per_policy.values())
    assert ps == sorted(float(table.loc[p, "lockup_probability"]) for p in table.index)
    assert client.list_artifacts(parents[0].info.run_id)  # sweep YAML, tables, plots

    # Rerun: nothing new; raising replicates runs only the new rows.
    res2, _, err2 = _run(path, no_mlflow=True)
    assert res2.exit_code == 0 and res2.rows_run == 0
    path = write_sweep(
        tmp_path,
        grid={"victim.sched_at_handover": ["unchanged", "idle"], "machine.rt_runtime_share": [True, False]},
        replicates=7,
    )
    res3, _, _ = _run(path, no_mlflow=True)
    assert res3.exit_code == 0 and res3.rows_run == 4 * 2 * 2
    df3 = storage.read_sweep(tmp_path / "results", "tiny")
    assert len(df3) == 4 * 2 * 7 and not df3.duplicated(["cell_id", "policy", "replicate"]).any()
    new = df3[df3["execution_id"] == res3.execution_id]
    assert set(new["replicate"]) == {5, 6}
    # Stored rows were not rewritten.
    old = df3[df3["execution_id"] == res.execution_id].sort_values(["cell_id", "policy", "replicate"])
    before = df.sort_values(["cell_id", "policy", "replicate"])
    pd.testing.assert_frame_equal(
        old[OUTCOME_COLUMNS].reset_index(drop=True), before[OUTCOME_COLUMNS].reset_index(drop=True)
    )


def test_one_and_two_workers_give_identical_outcomes(ray_session, write_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, replicates=6)
    frames = []
    for workers in (1, 2):
        res, _, err = _run(path, output=str(tmp_path / f"w{workers}"), workers=workers, no_mlflow=True)
        assert res.exit_code == 0, err
        df = storage.read_sweep(tmp_path / f"w{workers}", "tiny")
        frames.append(df.sort_values(["cell_id", "policy", "replicate"]).reset_index(drop=True))
    a, b = frames
    assert len(a) == 2 * 2 * 6
    cols = ["cell_id", "policy", "replicate", "seed", *OUTCOME_COLUMNS, *[c for c in a if c.startswith("cpu_s.")]]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    # ...and the same as running the rows serially in this process.
    res, _, _ = _run(path, output=str(tmp_path / "serial"), executor="serial", no_mlflow=True)
    c = storage.read_sweep(tmp_path / "serial", "tiny").sort_values(["cell_id", "policy", "replicate"])
    pd.testing.assert_frame_equal(a[cols], c.reset_index(drop=True)[cols])


def test_adaptive_replication_keeps_pairs_complete(ray_session, write_sweep, tmp_path, monkeypatch):
    from sweeps.analysis.stats import wilson

    monkeypatch.chdir(tmp_path)
    target = 0.15  # 0 lockups in n: Wilson half-width 0.245 at 4, 0.162 at 8, 0.120 at 12
    path = write_sweep(
        tmp_path,
        name="adaptive",
        replicates={"adaptive": {"ci_half_width": target, "min": 4, "max": 16, "batch": 4}},
    )
    res, _, err = _run(path, no_mlflow=True)
    assert res.exit_code == 0, err
    df = storage.read_sweep(tmp_path / "results", "adaptive")
    assert not df.duplicated(["cell_id", "policy", "replicate"]).any()
    counts = df.groupby(["cell_id", "policy"]).size().unstack()
    assert counts.to_numpy().max() > 4  # some cell needed more than `min`
    for cell_id, row in counts.iterrows():
        n = set(row)
        assert len(n) == 1, f"policies of cell {cell_id} got different replicate counts {row.to_dict()}"
        n = n.pop()
        assert n in (4, 8, 12, 16)
        reps = set(df.loc[df["cell_id"] == cell_id, "replicate"])
        assert reps == set(range(n))
        if n < 16:  # stopped early: every policy reached the target half-width
            for policy, group in df[df["cell_id"] == cell_id].groupby("policy"):
                w = wilson(int(group["lockup"].sum()), len(group))
                assert (w.high - w.low) / 2 <= target + 1e-12
    # Resuming an adaptive sweep that is complete runs nothing.
    res2, _, _ = _run(path, no_mlflow=True)
    assert res2.rows_run == 0

"""sweeps.tracking.mlflow_log against real MLflow stores (sqlite in tmp_path; one `mlflow server` test, slow)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from sweeps.storage import dataset as storage
from sweeps.tracking import mlflow_log as tracking
from sweeps.analysis.stats import wilson
from sweeps.errors import TrackingError
from sweeps.tracking.mlflow_log import log_sweep, mlflow_key, view_state_of
from sweeps.spec.model import SweepSpec
from sweeps.spec.parse import parse_sweep

import tracking_oracle  # noqa: E402  (tests/sweeps/tracking_oracle.py: the all-rows pandas summary)

SWEEP = "handoff-mini"
POLICIES = ("upstream_4_19", "timeout_backoff[timeout_s=2.0]")
HANDOVER = ("unchanged", "idle")
PRIORITY = (1, 50, 99)
REPLICATES = 12
LOCKUP_P = {"upstream_4_19": 0.7, "timeout_backoff[timeout_s=2.0]": 0.2}


# ---------------------------------------------------------------------------------------- fixtures


SCENARIO = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "handa-2018-11-14.yaml"
SPEC_YAML = """\
name: handoff-mini
base: {base}
grid:
  victim.sched_at_handover: [unchanged, idle]
  groups[0].sched.rt_priority: [1, 50, 99]
policies: {policies}
replicates: {replicates}
seed: 20181116
mlflow: {{experiment: handoff-exp, max_cell_runs: {max_cell_runs}}}
"""


def real_spec(replicates: int = REPLICATES, policies: str = "[upstream_4_19, {timeout_backoff: {timeout_s: 2.0}}]",
              max_cell_runs: int = 2000) -> SweepSpec:
    """The sweep these rows belong to, through the real parser and the real policy registry."""
    text = SPEC_YAML.format(base=SCENARIO, policies=policies, replicates=replicates, max_cell_runs=max_cell_runs)
    return parse_sweep(yaml.safe_load(text), SCENARIO.parent, text)


def synthetic_rows(execution_id: str = "exec-1", failed: int = 0, seed: int = 3) -> pd.DataFrame:
    """Rows with the contract's columns: 6 cells × 2 policies × 12 replicates, lockups by policy."""
    rng = np.random.default_rng(seed)
    records = []
    cell_index = 0
    for handover in HANDOVER:
        for prio in PRIORITY:
            cid = f"{cell_index:016x}"
            for policy in POLICIES:
                name = policy.split("[")[0]
                opts = {"timeout_s": 2.0} if "[" in policy else {}
                for rep in range(REPLICATES):
                    lockup = bool(rng.random() < LOCKUP_P[policy] * (0.5 + prio / 198))
                    stall = float(rng.uniform(20, 60) if lockup else rng.uniform(0, 15))
                    kills = int(rng.integers(1, 4))
                    records.append({
                        "sweep": SWEEP, "policy": policy, "policy_name": name,
                        "policy_options": json.dumps(opts), "cell_id": cid, "cell_index": cell_index,
                        "replicate": rep, "seed": int(rng.integers(0, 2**62)), "execution_id": execution_id,
                        "model_version": "0.1.0", "victim.sched_at_handover": handover,
                        "groups.0.sched.rt_priority": prio,
                        "scenario_json": json.dumps({"prio": prio, "handover": handover}),
                        "lockup": lockup, "lockup_reason": "stall" if lockup else "",
                        "max_stall_s": stall, "first_progress_s": None if lockup else 1.0,
                        "first_kill_s": 0.5, "kills": kills, "extra_kills": kills - 1,
                        "handed_over": bool(rng.random() < 0.4), "handovers": 1,
                        "oom_skip_by": "reaper", "reaper_attempts": 2, "memory_freed_mb": 180.0,
                        "panic": False, "victims_pending_at_end": int(lockup), "sim_time_s": 120.0,
                        "sim_events": 5000, "cpu_s.children": 3.0, "cpu_s.oom_reaper": 0.1,
                        "status": "ok", "error": "", "wall_s": 0.004, "node_id": "n1", "worker_pid": 42,
                    })
            cell_index += 1
    frame = pd.DataFrame.from_records(records)
    if failed:
        bad = frame.index[:failed]
        frame.loc[bad, "status"] = "error"
        frame.loc[bad, "error"] = "boom"
    return frame


def write_dataset(output: Path, rows: pd.DataFrame) -> None:
    """The storage layout (output/sweep=<name>/policy=<quoted label>/<uuid>.parquet), written directly
    so that the rows are exactly the synthetic ones; sweeps.storage.dataset reads them back."""
    provenance = json.dumps({"sweep": SWEEP, "sweep_hash": "ab" * 32, "seed": 20181116,
                             "model_version": "0.1.0"}).encode()
    for (sweep, policy), group in rows.groupby(["sweep", "policy"]):
        part = storage.partition_dir(output, sweep, policy)
        part.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(group.drop(columns=["sweep", "policy"]), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"oomsweep.provenance": provenance})
        pq.write_table(table, part / f"{uuid.uuid4().hex}.parquet")


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised, empty MLflow SQLite file: creating the tables costs ~3 s, copying it nothing."""
    path = tmp_path_factory.mktemp("store") / "empty.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def fresh_store(empty_store: Path, path: Path) -> str:
    shutil.copyfile(empty_store, path)
    return f"sqlite:///{path}"


@pytest.fixture()
def env(tmp_path, monkeypatch, empty_store):
    """A results dir with the synthetic rows, a fresh store, cwd in tmp (artifacts land in ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    output = tmp_path / "results"
    rows = synthetic_rows()
    write_dataset(output, rows)
    uri = fresh_store(empty_store, tmp_path / "mlflow.db")
    return output, rows, uri


def runs_of(uri: str, experiment: str = "handoff-exp") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=5000)


def expected_metrics(group: pd.DataFrame) -> dict:
    ok = group[group["status"] == "ok"]
    k, n = int(ok["lockup"].sum()), len(ok)
    w = wilson(k, n)
    return {
        "n": n, "lockups": k, "lockup_probability": k / n, "ci_low": w.low, "ci_high": w.high,
        "median_stall_s": float(np.median(ok["max_stall_s"])),
        "p99_stall_s": float(np.quantile(ok["max_stall_s"], 0.99)),
        "mean_kills": float(ok["kills"].mean()), "handed_over_rate": float(ok["handed_over"].mean()),
        "failed_rows": len(group) - n,
    }


# ------------------------------------------------------------------------------------------- tests


def test_parent_and_one_child_per_policy_with_recomputed_metrics(env):
    output, rows, uri = env
    spec = real_spec()
    result = log_sweep(output, SWEEP, tracking_uri=uri, spec=spec, execution_id="exec-1",
                       max_cell_runs=0)
    assert result.experiment == "handoff-exp" and not result.already_logged
    assert (result.policy_runs, result.cell_runs) == (2, 0)

    runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags.get("oomsweep.role") == "parent"]
    assert [r.info.run_id for r in parents] == [result.parent_run_id]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    tags, params = parent.data.tags, parent.data.params
    assert tags["oomsweep.execution_id"] == "exec-1" and tags["oomsweep.sweep"] == SWEEP
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"] and tags["mlflow.source.name"]
    note = tags["mlflow.note.content"]  # the report's text table in a fixed-width block
    assert "```\npolicy " in note and "\nupstream_4_19 " in note and "Wilson 95 %" in note
    assert "block 0 (replicates 12)" in note
    assert parent.info.run_name.startswith(f"{SWEEP} block 0 · ")
    exp_tags = MlflowClient(uri).get_experiment(result.experiment_id).tags
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
    envelope = json.loads(exp_tags["mlflow.sharedViewState.oomsweep"])  # a saved view, listed in the Views menu
    assert envelope["name"] and envelope["createdAt"] > 0
    view = view_state_of(exp_tags["mlflow.sharedViewState.oomsweep"])
    assert "metrics.`lockup_p/upstream_4_19`" in view["selectedColumns"]
    assert "params.`victim.sched_at_handover`" in view["selectedColumns"]
    assert result.ui_path.endswith("workflowType=machine_learning&viewStateShareKey=oomsweep")
    assert params["sweep_hash"] == spec.sweep_hash
    assert params["grid"] == "victim.sched_at_handover=2, groups[0].sched.rt_priority=3"
    assert params["policies"] == "upstream_4_19, timeout_backoff[timeout_s=2.0]"
    assert params["replicates"] == "12" and params["model_version"] == "0.1.0"
    assert params["seed"] == "20181116" and params["cells"] == "6"
    assert parent.data.metrics["rows"] == len(rows)

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert sorted(r.data.params["policy"] for r in children) == sorted(POLICIES)
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["oomsweep.role"] == "policy"
        policy = child.data.params["policy"]
        want = expected_metrics(rows[rows["policy"] == policy])
        assert child.data.metrics == pytest.approx(want, rel=1e-12)
        if "[" in policy:
            assert child.data.params["option.timeout_s"] == "2.0"
            assert child.data.params["policy_name"] == "timeout_backoff"
    # The two synthetic policies differ a lot; the metrics must show it.
    by_policy = {c.data.params["policy"]: c.data.metrics["lockup_probability"] for c in children}
    assert by_policy["upstream_4_19"] > by_policy["timeout_backoff[timeout_s=2.0]"]
    # The parent carries the headline: each policy's probability and interval, names sorting together.
    for policy, p in by_policy.items():
        key = mlflow_key(f"lockup_p/{policy}")
        assert parent.data.metrics[key] == float(f"{p:.4g}")  # 4 significant digits: read, not recomputed
        low, high = parent.data.metrics[f"{key}.ci_low"], parent.data.metrics[f"{key}.ci_high"]
        assert low <= p <= high and len(repr(low).lstrip("0.").rstrip("0")) <= 4
        n = next(c.data.metrics["n"] for c in children if c.data.params["policy"] == policy)
        assert parent.data.metrics[f"{key}.n"] == n == int(n)


def test_second_call_for_a_logged_execution_is_a_no_op(env):
    output, _, uri = env
    first = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="exec-1")
    count = len(runs_of(uri))
    assert count == 1 + 2 + 12
    second = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="exec-1")
    assert second.already_logged and second.parent_run_id == first.parent_run_id
    assert len(runs_of(uri)) == count
    third = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="exec-2")
    assert not third.already_logged and third.parent_run_id != first.parent_run_id
    assert len(runs_of(uri)) == 2 * count


def test_unfinished_parent_of_an_interrupted_attempt_is_replaced(env):
    output, _, uri = env
    client = MlflowClient(uri)
    exp_id = client.create_experiment("handoff-exp")
    stale = client.create_run(exp_id, tags={"oomsweep.execution_id": "exec-1", "oomsweep.role": "parent",
                                            "oomsweep.sweep": SWEEP})
    orphan = client.create_run(exp_id, tags={"mlflow.parentRunId": stale.info.run_id})
    result = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="exec-1",
                       max_cell_runs=0)
    assert result.parent_run_id != stale.info.run_id
    assert client.get_run(stale.info.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(orphan.info.run_id).info.lifecycle_stage == "deleted"
    assert len(runs_of(uri)) == 3


def test_cell_children_only_while_cells_times_policies_fit(env):
    output, rows, uri = env
    capped = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="capped",
                       max_cell_runs=11)  # 6 cells × 2 policies = 12 > 11
    assert capped.cell_runs == 0
    client = MlflowClient(uri)
    assert "skipped" in client.get_run(capped.parent_run_id).data.tags["oomsweep.cell_runs"]

    full = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="full",
                     max_cell_runs=12)
    assert full.cell_runs == 12
    cells = [r for r in runs_of(uri) if r.data.tags.get("mlflow.parentRunId") == full.parent_run_id
             and r.data.tags.get("oomsweep.role") == "cell"]
    assert len(cells) == 12
    for run in cells:
        p = run.data.params
        assert set(p) == {"victim.sched_at_handover", "groups.0.sched.rt_priority", "policy"}
        group = rows[(rows["cell_id"] == run.data.tags["oomsweep.cell_id"]) & (rows["policy"] == p["policy"])]
        assert p["victim.sched_at_handover"] == group["victim.sched_at_handover"].iloc[0]
        assert p["groups.0.sched.rt_priority"] == str(group["groups.0.sched.rt_priority"].iloc[0])
        assert run.data.metrics == pytest.approx(expected_metrics(group), rel=1e-12)


def test_execution_logged_under_the_spec_experiment_is_found_without_the_spec(env):
    output, _, uri = env
    first = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="exec-1")
    again = log_sweep(output, SWEEP, tracking_uri=uri, execution_id="exec-1")  # as `oomsweep log` does
    assert again.already_logged and again.parent_run_id == first.parent_run_id
    assert again.experiment == "handoff-exp"
    assert MlflowClient(uri).get_experiment_by_name(SWEEP) is None  # no stray experiment created


def test_spec_selects_its_policies_and_replicates(env):
    output, rows, uri = env
    spec = real_spec(replicates=10, policies="[upstream_4_19]")
    result = log_sweep(output, SWEEP, tracking_uri=uri, spec=spec, execution_id="e", max_cell_runs=0)
    assert result.policy_runs == 1
    [child] = [r for r in runs_of(uri) if r.data.tags.get("oomsweep.role") == "policy"]
    kept = rows[(rows["policy"] == "upstream_4_19") & (rows["replicate"] < 10)]
    assert child.data.metrics == pytest.approx(expected_metrics(kept), rel=1e-12)
    assert child.data.metrics["n"] == 60


def test_spec_max_cell_runs_is_the_default(env):
    output, _, uri = env
    spec = real_spec(max_cell_runs=5)
    assert log_sweep(output, SWEEP, tracking_uri=uri, spec=spec, execution_id="e").cell_runs == 0


def test_artifacts_and_dataset_input(env):
    output, _, uri = env
    spec = real_spec()
    result = log_sweep(output, SWEEP, tracking_uri=uri, spec=spec, execution_id="exec-1")
    client = MlflowClient(uri)
    top = {a.path: a for a in client.list_artifacts(result.parent_run_id)}
    assert {"sweep.yaml", "policy_table.csv", "policy_table.html", "provenance.json", "plots"} <= set(top)
    pngs = {a.path: a.file_size for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert set(pngs) == {"plots/lockup_probability.png", "plots/lockup_heatmap.png", "plots/lockup_per_cell.png",
                         "plots/stall_survival.png"}
    assert all(size > 5000 for size in pngs.values())
    local = Path(client.download_artifacts(result.parent_run_id, "sweep.yaml"))
    assert local.read_text() == spec.source_text
    table = pd.read_csv(client.download_artifacts(result.parent_run_id, "policy_table.csv"))
    assert list(table["policy"]) == list(POLICIES)  # spec order, not alphabetical
    assert table["n"].tolist() == [72, 72]

    inputs = client.get_run(result.parent_run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.name == f"{SWEEP}.cells"
    assert json.loads(ds.source)["uri"] == str(storage.sweep_dir(output, SWEEP).resolve())
    assert json.loads(ds.profile)["num_rows"] == 12  # a per-cell summary, not the 144 rows
    # No file store anywhere: artifacts under ./mlruns carry no experiment meta.yaml.
    assert not list(Path("mlruns").glob("*/meta.yaml"))


def test_artifacts_go_next_to_the_sqlite_file_not_into_cwd(env, tmp_path, monkeypatch):
    output, _, uri = env
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = log_sweep(output, SWEEP, tracking_uri=uri, spec=real_spec(), execution_id="e", max_cell_runs=0)
    artifact_uri = MlflowClient(uri).get_run(result.parent_run_id).info.artifact_uri
    assert artifact_uri.startswith(str(tmp_path / "mlruns" / "handoff-exp"))
    assert (Path(artifact_uri) / "policy_table.csv").is_file()
    assert not (elsewhere / "mlruns").exists()


def test_failed_rows_are_counted_apart(tmp_path, monkeypatch, empty_store):
    monkeypatch.chdir(tmp_path)
    rows = synthetic_rows(failed=5)
    write_dataset(tmp_path / "out", rows)
    uri = fresh_store(empty_store, tmp_path / "m.db")
    result = log_sweep(tmp_path / "out", SWEEP, tracking_uri=uri, execution_id="e", max_cell_runs=0)
    assert result.experiment == SWEEP  # no spec: the sweep name
    children = [r for r in runs_of(uri, SWEEP) if r.data.tags.get("oomsweep.role") == "policy"]
    got = {c.data.params["policy"]: c.data.metrics for c in children}
    failed_policy = rows.loc[rows["status"] != "ok", "policy"].iloc[0]
    assert got[failed_policy]["failed_rows"] == 5
    assert got[failed_policy]["n"] == 72 - 5
    assert got[failed_policy] == pytest.approx(expected_metrics(rows[rows["policy"] == failed_policy]))
    parent = MlflowClient(uri).get_run(result.parent_run_id)
    assert parent.data.params["replicates"] == "12"  # derived from rows without a spec
    assert parent.data.params["sweep_hash"] == "ab" * 32  # from the Parquet provenance


def test_default_uri_is_sqlite_in_cwd_unless_env_says_otherwise(env, tmp_path, monkeypatch, empty_store):
    output, _, _ = env
    result = log_sweep(output, SWEEP, tracking_uri=None, execution_id="e", max_cell_runs=0)
    assert result.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert len(runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", SWEEP)) == 3
    other = fresh_store(empty_store, tmp_path / "other.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert log_sweep(output, SWEEP, tracking_uri=None, execution_id="e", max_cell_runs=0).tracking_uri == other
    assert len(runs_of(other, SWEEP)) == 3


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns", "/abs/mlruns"])
def test_file_store_is_refused(env, uri):
    output, _, _ = env
    with pytest.raises(TrackingError, match="file store"):
        log_sweep(output, SWEEP, tracking_uri=uri, execution_id="e")


def test_unreachable_server_is_one_clear_error_quickly(env):
    output, _, _ = env
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}.*unreachable"):
        log_sweep(output, SWEEP, tracking_uri=f"http://127.0.0.1:{port}", execution_id="e")
    assert time.monotonic() - started < 10


def test_broken_store_is_a_tracking_error(env, tmp_path):
    output, _, _ = env
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(TrackingError, match="MLflow tracking at sqlite:.*failed"):
        log_sweep(output, SWEEP, tracking_uri=f"sqlite:///{garbage}", execution_id="e")


def test_no_rows_is_a_tracking_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingError, match="no rows"):
        log_sweep(tmp_path / "empty", SWEEP, tracking_uri=f"sqlite:///{tmp_path}/m.db", execution_id="e")


def test_bad_execution_id_or_sweep_name_is_rejected(env):
    output, _, uri = env
    with pytest.raises(ValueError, match="execution_id"):
        log_sweep(output, SWEEP, tracking_uri=uri, execution_id="x' or '1'='1")
    with pytest.raises(ValueError, match="sweep"):
        log_sweep(output, "../x", tracking_uri=uri, execution_id="e")


def test_mlflow_key_keeps_only_safe_characters():
    assert tracking.mlflow_key("groups.0.sched.rt_priority") == "groups.0.sched.rt_priority"
    assert tracking.mlflow_key("option.a[b]=c") == "option.a_b__c"
    assert len(tracking.mlflow_key("k" * 400)) == 250


# ------------------------------------------------------------------------------ real mlflow server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path, empty_store):
    import requests

    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2", "--backend-store-uri", fresh_store(empty_store, tmp_path / "server.db"),
         "--default-artifact-root", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,  # its own process group: uvicorn workers and job runners go with it
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(uri + "/health", timeout=1).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not come up:\n" + (tmp_path / "server.log").read_text()[-2000:])
            time.sleep(0.3)
        yield uri
    finally:
        proc.terminate()  # lets the server stop its workers and job runner itself
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of that group is left
        proc.wait()
        log.close()


@pytest.mark.slow
def test_against_a_real_mlflow_server(env, mlflow_server, capfd):
    output, rows, _ = env
    result = log_sweep(output, SWEEP, tracking_uri=mlflow_server, spec=real_spec(), execution_id="exec-1")
    assert (result.policy_runs, result.cell_runs) == (2, 12)
    runs = runs_of(mlflow_server)
    assert len(runs) == 1 + 2 + 12
    children = [r for r in runs if r.data.tags.get("oomsweep.role") == "policy"]
    for child in children:
        want = expected_metrics(rows[rows["policy"] == child.data.params["policy"]])
        assert child.data.metrics == pytest.approx(want, rel=1e-12)
    cells = [r for r in runs if r.data.tags.get("oomsweep.role") == "cell"]  # logged by a thread pool
    assert len(cells) == 12
    assert len({(r.data.tags["oomsweep.cell_id"], r.data.params["policy"]) for r in cells}) == 12
    for run in cells:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        group = rows[(rows["cell_id"] == run.data.tags["oomsweep.cell_id"]) & (rows["policy"] == run.data.params["policy"])]
        assert run.data.metrics == pytest.approx(expected_metrics(group), rel=1e-12)
    client = MlflowClient(mlflow_server)
    assert {a.path for a in client.list_artifacts(result.parent_run_id, "plots")} >= {
        "plots/lockup_probability.png", "plots/stall_survival.png"}
    again = log_sweep(output, SWEEP, tracking_uri=mlflow_server, spec=real_spec(), execution_id="exec-1")
    assert again.already_logged and len(runs_of(mlflow_server)) == len(runs)
    assert "View run" not in capfd.readouterr().out  # per-run URL prints suppressed


# ------------------------------------------------------------------ streaming summary == in-memory one


def reference_summary(output: Path, spec) -> dict:
    """The summaries as log_sweep computed them before the streaming scan: every row in pandas."""
    rows = tracking_oracle.read_all_rows(output, SWEEP)
    if spec is not None:
        keep = rows["policy"].isin([p.label for p in spec.policies]) & (rows["replicate"] < spec.replicates)
        rows = rows[keep].reset_index(drop=True)
    grid = tracking.grid_columns(rows, spec)
    counts = rows.groupby(["cell_id", "policy"], observed=True).size()
    lo, hi = int(counts.min()), int(counts.max())
    first = {p: g.iloc[0] for p, g in rows.groupby("policy")["policy_name"]}
    return {
        "grid": grid,
        "table": tracking_oracle.summarise(rows, ("policy",)),
        "cells": tracking_oracle.cell_summary(rows, grid),
        "rows": len(rows),
        "rows_ok": int((rows["status"] == "ok").sum()),
        "n_cells": int(rows["cell_id"].nunique()),
        "sim_cpu_s": float(rows["wall_s"].astype(float).sum()),
        "rows_in_execution": int((rows["execution_id"] == "exec-1").sum()),
        "model_versions": sorted(map(str, pd.unique(rows["model_version"]))),
        "replicates": str(lo) if lo == hi else f"{lo}..{hi}",
        "grid_text": ", ".join(f"{c}={rows[c].nunique(dropna=False)}" for c in grid),
        "policy_names": {p: str(v) for p, v in first.items()},
        "stalls": {p: g.loc[g["status"] == "ok", "max_stall_s"].astype(float).to_numpy()
                   for p, g in rows.groupby("policy")},
    }


@pytest.mark.parametrize("replicates", [None, 9], ids=["no-spec", "spec-replicates-9"])
def test_streaming_summary_equals_the_in_memory_one(tmp_path, monkeypatch, replicates):
    """Many small files and tiny scan batches, failed rows, missing kills/stalls, odd float sums."""
    spec = None if replicates is None else real_spec(replicates=replicates)
    rows = synthetic_rows(failed=7, seed=11)
    rng = np.random.default_rng(5)
    rows["wall_s"] = 10 ** rng.uniform(-8, 2, len(rows))  # a float sum whose rounding depends on order
    rows.loc[rows.index[10:14], "max_stall_s"] = np.nan
    rows["kills"] = rows["kills"].astype(float)
    rows.loc[rows.index[20:23], "kills"] = np.nan
    rows.loc[rows.index[::17], "execution_id"] = "exec-0"
    rows.loc[rows.index[::29], "model_version"] = "0.0.9"
    output = tmp_path / "out"
    shuffled = rows.sample(frac=1.0, random_state=2).reset_index(drop=True)
    for start in range(0, len(shuffled), 16):  # 9 × 2 files: the rows of a cell spread over them
        write_dataset(output, shuffled.iloc[start:start + 16])
    monkeypatch.setattr(tracking, "_SCAN_BATCH_ROWS", 7)

    want = reference_summary(output, spec)
    got = tracking._scan(output, SWEEP, spec, "exec-1")
    assert got.grid == want["grid"]
    pd.testing.assert_frame_equal(got.policy_table(), want["table"], check_exact=True)
    pd.testing.assert_frame_equal(got.cell_table(), want["cells"], check_exact=True)
    assert (got.rows, got.rows_ok, got.n_cells) == (want["rows"], want["rows_ok"], want["n_cells"])
    assert got.sim_cpu_s() == want["sim_cpu_s"]  # bit for bit: summed once, in the same row order
    assert got.rows_in_execution == want["rows_in_execution"]
    assert sorted(got.model_versions) == want["model_versions"]
    assert got.replicates_text() == want["replicates"]
    assert got.grid_text() == want["grid_text"]
    for policy, stalls in want["stalls"].items():
        mine = got.policy_group(policy).stall_values()
        assert np.isnan(mine).sum() == np.isnan(stalls).sum()
        assert sorted(mine[~np.isnan(mine)]) == sorted(stalls[~np.isnan(stalls)])
        assert tracking._policy_info(got, policy)[0] == want["policy_names"][policy]
    assert want["rows"] < len(rows) if spec is not None else want["rows"] == len(rows)


def test_backfill_logs_the_same_metrics_as_the_in_memory_summary(env):
    output, _, uri = env
    want = reference_summary(output, None)
    result = log_sweep(output, SWEEP, tracking_uri=uri, execution_id="exec-1")  # as `oomsweep log` does
    runs = runs_of(uri, SWEEP)
    by_policy = {r.data.params["policy"]: r.data.metrics for r in runs if r.data.tags["oomsweep.role"] == "policy"}
    for rec in want["table"].to_dict("records"):
        assert by_policy[rec["policy"]] == {k: v for k, v in rec.items() if k != "policy"}
    cells = [r for r in runs if r.data.tags["oomsweep.role"] == "cell"]
    assert len(cells) == result.cell_runs == len(want["cells"])
    expected = {(r["cell_id"], r["policy"]): r for r in want["cells"].to_dict("records")}
    for run in cells:
        rec = expected[(run.data.tags["oomsweep.cell_id"], run.data.params["policy"])]
        assert run.data.metrics == {k: rec[k] for k in (*tracking.METRICS, "failed_rows")}
    parent = MlflowClient(uri).get_run(result.parent_run_id).data
    assert parent.metrics["sim_cpu_s"] == want["sim_cpu_s"]
    assert parent.params["grid"] == want["grid_text"]


# ------------------------------------------------------------------------- concurrent child logging


def test_concurrent_child_runs_all_exist_finished_with_their_metrics(env):
    """The thread pool path (a server's) against a store: every run created, logged and FINISHED."""
    _, _, uri = env
    client = MlflowClient(uri)
    exp = client.create_experiment("concurrent")
    parent = client.create_run(exp).info.run_id
    plans = [
        tracking._RunPlan(f"p{i % 2} · cell {i}", {tracking.PARENT_TAG: parent, "oomsweep.role": "cell",
                                                   "oomsweep.cell_index": str(i)},
                          {"x": str(i), "policy": f"p{i % 2}"},
                          {m: i + j / 10 for j, m in enumerate((*tracking.METRICS, "failed_rows"))})
        for i in range(40)
    ]
    assert tracking._log_children(client, exp, plans, threads=6) == 40
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000)
    assert len(runs) == 40
    for run in runs:
        i = int(run.data.tags["oomsweep.cell_index"])
        assert run.info.status == "FINISHED" and run.info.end_time is not None
        assert run.info.run_name == f"p{i % 2} · cell {i}"
        assert run.data.params == {"x": str(i), "policy": f"p{i % 2}"}
        assert run.data.metrics == {m: i + j / 10 for j, m in enumerate((*tracking.METRICS, "failed_rows"))}


def test_child_threads_serial_on_sqlite_and_within_the_http_pool(monkeypatch):
    assert tracking._child_threads("sqlite:///x.db", None) == 1
    assert tracking._child_threads("sqlite:///x.db", 8) == 1
    monkeypatch.delenv("MLFLOW_HTTP_POOL_MAXSIZE", raising=False)
    assert 1 < tracking._child_threads("http://127.0.0.1:5000", None) <= 10
    assert tracking._child_threads("http://127.0.0.1:5000", 64) == 10  # never past the pool: no churn
    monkeypatch.setenv("MLFLOW_HTTP_POOL_MAXSIZE", "32")
    assert tracking._child_threads("http://127.0.0.1:5000", 32) == 32
    assert tracking._child_threads("https://mlflow.internal", 3) == 3

"""The driver SIGKILLed while it logs to MLflow, after every row is stored.

Before: the rerun printed "nothing new to run" and logged nothing; MLflow kept a RUNNING parent with
part of its child runs for good, and `oomsweep log` added a second parent. Now the execution record
says the logging started and never finished; the rerun (or `oomsweep log`) completes the same
parent run: the child runs logged before the kill are kept, the missing ones are added, the run
killed half-way is deleted, and the parent ends FINISHED. One parent per execution, one child per
(policy) and per (cell, policy), always.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from rel_helpers import ENDLESS_SCENARIO, oomsweep_cmd, subprocess_env, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

CHEAP = {**ENDLESS_SCENARIO, "horizon_s": 0.002, "lockup_after_s": 0.001}
POLICIES = ["upstream_4_19", "timeout_backoff", "handoff_rfc_v2", "direct_reap", "upstream_6_1"]
CHILDREN = len(POLICIES) + 25 * len(POLICIES)  # one per policy, one per (cell, policy)


def _sweep(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "ml.yaml", {
        "name": "ml", "base": CHEAP,
        "grid": {"machine.cpus": [1, 2, 3, 4, 5], "groups[0].count": [1, 2, 3, 4, 5]},
        "policies": POLICIES, "replicates": 2, "seed": 1, "output": str(tmp_path / "results"),
    })


def _runs_in_store(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as c:
            return c.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_while_logging(tmp_path: Path, path: Path, uri: str, db: Path, at_runs: int = 30) -> int:
    """Start `oomsweep run`; SIGKILL it once the store holds `at_runs` runs. Returns the count then."""
    log = open(tmp_path / "killed-run.log", "w")
    proc = subprocess.Popen(oomsweep_cmd("run", str(path), "--serial", "--mlflow-uri", uri), cwd=tmp_path,
                            env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            n = _runs_in_store(db)
            if n >= at_runs:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return n
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError("the run ended before it could be killed while logging:\n"
                         + (tmp_path / "killed-run.log").read_text()[-3000:])


def _record(tmp_path: Path, execution_id: str | None = None) -> dict:
    """The killed execution's record (the only one right after the kill; later runs add their own)."""
    recs = [json.loads(f.read_text()) for f in (tmp_path / "results" / "sweep=ml" / "_executions").glob("*.json")]
    if execution_id is None:
        (rec,) = recs
        return rec
    (rec,) = [r for r in recs if r["execution_id"] == execution_id]
    return rec


def _store(uri: str, execution_id: str):
    """(active parents of the execution, active children of each parent) from the real store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, f"tags.`oomsweep.execution_id` = '{execution_id}' and "
                                       f"tags.`oomsweep.role` = 'parent'", max_results=1000)
    children = {p.info.run_id: client.search_runs([p.info.experiment_id],
                                                  f"tags.`mlflow.parentRunId` = '{p.info.run_id}'", max_results=5000)
                for p in parents}
    return parents, children


def _assert_complete(uri: str, execution_id: str, parent_before: str) -> None:
    parents, children = _store(uri, execution_id)
    assert [p.info.run_id for p in parents] == [parent_before], "one parent, the one the killed driver created"
    assert parents[0].info.status == "FINISHED"
    kids = children[parent_before]
    assert len(kids) == CHILDREN and all(k.info.status == "FINISHED" for k in kids)
    keys = Counter(k.data.tags["oomsweep.child"] for k in kids)
    assert len(keys) == CHILDREN and max(keys.values()) == 1
    assert float(parents[0].data.metrics["rows"]) == 250.0


def _state_after_kill(tmp_path: Path, uri: str, db: Path, runs_at_kill: int) -> tuple[str, str]:
    rec = _record(tmp_path)
    assert rec["state"] == "stored" and rec["rows_written"] == 250
    assert rec["mlflow"]["state"] == "logging"  # what the next run acts on
    parents, children = _store(uri, rec["execution_id"])
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    assert 0 < len(children[parents[0].info.run_id]) < CHILDREN  # killed part-way through the children
    return rec["execution_id"], parents[0].info.run_id


@dataclass(frozen=True)
class Killed:
    """A sweep whose driver was SIGKILLed while it logged to MLflow, and what it left behind."""

    db: Path  # the sqlite file of the store
    uri: str
    path: Path  # the sweep file
    eid: str  # the killed execution
    parent: str  # its RUNNING parent run


@pytest.fixture()
def killed(tmp_path: Path) -> Killed:
    """Store, sweep, the driver killed part-way through its child runs, and the state checked."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    path = _sweep(tmp_path)
    n = _kill_while_logging(tmp_path, path, uri, db)
    eid, parent = _state_after_kill(tmp_path, uri, db, n)
    return Killed(db, uri, path, eid, parent)


def test_rerun_completes_the_logging_of_a_driver_killed_while_logging(tmp_path, killed):
    db, uri, path, eid, parent = killed.db, killed.uri, killed.path, killed.eid, killed.parent

    p = subprocess.run(oomsweep_cmd("run", str(path), "--serial", "--mlflow-uri", uri), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert f"MLflow logging of execution {eid} was interrupted; completing it" in p.stderr, p.stderr
    assert f"completed the unfinished parent run {parent}" in p.stderr, p.stderr
    assert "nothing new to run" in p.stderr
    _assert_complete(uri, eid, parent)
    assert _record(tmp_path, eid)["mlflow"]["state"] == "logged"

    # once complete, nothing more: another rerun and `oomsweep log` change no run
    before = _runs_in_store(db)
    p = subprocess.run(oomsweep_cmd("run", str(path), "--serial", "--mlflow-uri", uri), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "completing" not in p.stderr, p.stderr
    p = subprocess.run(oomsweep_cmd("log", str(tmp_path / "results"), "--mlflow-uri", uri), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and f"ml execution {eid}: already logged" in p.stdout, p.stdout + p.stderr
    assert _runs_in_store(db) == before


def test_log_completes_the_same_parent_and_no_mlflow_rerun_says_how(tmp_path, killed):
    uri, path, eid, parent = killed.uri, killed.path, killed.eid, killed.parent

    # a rerun without MLflow logs nothing, exits 0, and names the command that completes it
    p = subprocess.run(oomsweep_cmd("run", str(path), "--serial", "--no-mlflow"), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (f"note: MLflow logging of execution {eid} was interrupted; complete it with: "
            f"oomsweep log {tmp_path / 'results'} --sweep ml") in p.stderr, p.stderr

    p = subprocess.run(oomsweep_cmd("log", str(tmp_path / "results"), "--mlflow-uri", uri), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert f"ml execution {eid}: completed its unfinished parent run" in p.stdout, p.stdout
    _assert_complete(uri, eid, parent)
    assert _record(tmp_path, eid)["mlflow"]["state"] == "logged"

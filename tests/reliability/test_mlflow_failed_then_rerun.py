"""MLflow unreachable for a run, reachable for the next run of the same sweep: the rerun, which has
nothing new to compute, logs the execution whose logging failed (before, it logged nothing and said
"nothing new to run"). A real closed port, then a real sqlite store."""

from __future__ import annotations

import json
import socket

import pytest

from sweeps.cli import main

from rel_helpers import handa_sweep

pytestmark = pytest.mark.timeout(300)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def test_rerun_logs_the_execution_whose_logging_failed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = handa_sweep(tmp_path, replicates=2)
    down = f"http://127.0.0.1:{_closed_port()}"
    assert main(["run", str(path), "--serial", "--mlflow-uri", down]) == 0
    err = capsys.readouterr().err
    assert err.count("MLflow tracking failed") == 1, err
    (rec_file,) = (tmp_path / "results" / "sweep=rel" / "_executions").glob("*.json")
    rec = json.loads(rec_file.read_text())
    assert rec["mlflow"]["state"] == "failed" and rec["rows_written"] == 8
    eid = rec["execution_id"]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(path), "--serial", "--mlflow-uri", uri]) == 0
    err = capsys.readouterr().err
    assert "nothing new to run" in err and "Traceback" not in err
    assert f"MLflow logging of execution {eid} failed (" in err and "completing it" in err, err
    assert json.loads(rec_file.read_text())["mlflow"]["state"] == "logged"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, "tags.`oomsweep.role` = 'parent'")
    assert [p.data.tags["oomsweep.execution_id"] for p in parents] == [eid]
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["rows"] == 8.0

    # logged once: the next rerun and `oomsweep log` add nothing
    assert main(["run", str(path), "--serial", "--mlflow-uri", uri]) == 0
    assert "completing" not in capsys.readouterr().err
    assert main(["log", "results", "--mlflow-uri", uri]) == 0
    assert f"rel execution {eid}: already logged" in capsys.readouterr().out
    assert len(client.search_runs(exps, "tags.`oomsweep.role` = 'parent'")) == 1

"""infra/mlflow/serve.sh starts a real `mlflow server`; a sweep logs to it; runs are found over REST."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from infra_harness import ROOT, TINY, VENV_BIN, free_port, kill_marked, run

pytestmark = pytest.mark.integration


def _get(url: str, host: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return r.status, (json.loads(body) if body.strip().startswith(b"{") else {})
    except urllib.error.HTTPError as e:
        return e.code, {}


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def mlflow_server(tmp_path, infra_env, marker):
    port = free_port()
    env = dict(infra_env, MLFLOW_PORT=str(port), MLFLOW_DATA=str(tmp_path / "data"), MLFLOW_WORKERS="1",
               MLFLOW_BIN=str(VENV_BIN / "mlflow"))
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(["bash", str(ROOT / "infra" / "mlflow" / "serve.sh")], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if _get(f"{url}/health")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mlflow server did not come up: {(tmp_path / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url, tmp_path / "data"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # serve.sh exec'd mlflow; its uvicorn workers share the group
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        kill_marked(marker)
        log.close()


def test_sweep_logs_parent_and_children_to_the_served_mlflow(mlflow_server, infra_env, tmp_path):
    url, data = mlflow_server
    t_up = time.monotonic()
    # Bound to 127.0.0.1, SQLite + artifacts under the data dir, DNS-rebinding protection on.
    assert (data / "mlflow.db").exists() and (data / "artifacts").is_dir()
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(search)[0] == 200
    assert _get(search, host="evil.example")[0] == 403

    env = dict(infra_env, MLFLOW_TRACKING_URI=url)
    run([str(VENV_BIN / "oomsweep"), "run", str(TINY), "--serial", "--output", str(tmp_path / "results")],
        env, timeout=300, cwd=tmp_path)
    t_sweep = time.monotonic()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()  # nothing local

    api = f"{url}/api/2.0/mlflow"
    status, exp = _get(f"{api}/experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": "infra-tiny"}))
    assert status == 200
    exp_id = exp["experiment"]["experiment_id"]
    runs = _post(f"{api}/runs/search", {"experiment_ids": [exp_id], "max_results": 1000}).get("runs", [])
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags) if "mlflow.parentRunId" not in t]
    assert len(parents) == 1
    parent = parents[0]["info"]
    assert parent["status"] == "FINISHED"
    assert any(t.get("oomsweep.execution_id") for t, r in zip(tags, runs) if r["info"] is parent)
    children = _post(f"{api}/runs/search", {
        "experiment_ids": [exp_id], "filter": f"tags.mlflow.parentRunId = '{parent['run_id']}'", "max_results": 1000,
    }).get("runs", [])
    # One child per policy (2) and per (cell, policy) (2 cells x 2 policies) of the tiny sweep.
    assert len(children) >= 2 and len(children) == len(runs) - 1
    # Artifacts go through the server (proxied) into the data directory.
    assert parent["artifact_uri"].startswith("mlflow-artifacts:")
    status, listing = _get(f"{api}/artifacts/list?run_id={parent['run_id']}")
    if status == 200 and listing.get("files"):
        assert any(data.joinpath("artifacts").rglob("*"))
    print(f"\nmlflow server: sweep + logging {t_sweep - t_up:.1f}s, "
          f"{len(children)} child runs")

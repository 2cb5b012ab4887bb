"""`ray job submit --working-dir . -- oomsweep run SWEEP --address auto` against a real `ray start --head`.

The path the Jobs API docs recommend: the project directory is zipped into the cluster, the job
runs `oomsweep` there, and the submission id is the idempotency key (a reused id is rejected).
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from infra_harness import ROOT, TINY, VENV_BIN, run

pytestmark = pytest.mark.integration


def test_ray_job_submit_runs_the_sweep_once_per_submission_id(local_ray, infra_env, tmp_path):
    t0 = time.monotonic()
    local_ray.start_head(num_cpus=2)
    t_head = time.monotonic()
    out = tmp_path / "results"
    sid = "infra-tiny-2026-11-25"
    job = [
        str(VENV_BIN / "ray"), "job", "submit", "--address", local_ray.dashboard_url,
        "--submission-id", sid, "--working-dir", ".", "--",
        "oomsweep", "run", str(TINY.relative_to(ROOT)), "--address", "auto",
        "--output", str(out), "--no-mlflow",  # MLflow from a cluster run: test_ray_submit, test_mlflow_server
    ]
    p = run(job, infra_env, timeout=300, cwd=ROOT)
    t_job = time.monotonic()
    assert "succeeded" in (p.stdout + p.stderr).lower()

    df = pd.read_parquet(out / "sweep=infra-tiny")
    assert len(df) == 16 and (df["status"] == "ok").all()
    assert df[["cell_id", "policy", "replicate"]].drop_duplicates().shape[0] == 16
    assert df["execution_id"].nunique() == 1
    # The job ran on the cluster we started (its only node), not in an embedded Ray of its own.
    nodes = run([str(VENV_BIN / "python"), "-c",
                 "import ray,logging; ray.init(address=%r, logging_level=logging.ERROR); "
                 "print(ray.nodes()[0]['NodeID'])" % local_ray.gcs_address], infra_env, timeout=60)
    assert set(df["node_id"]) == {nodes.stdout.strip().splitlines()[-1]}

    # Same submission id again: Ray refuses it, so a retried schedule never runs the sweep twice.
    again = run(job, infra_env, timeout=120, cwd=ROOT, check=False)
    assert again.returncode != 0
    assert "already exists" in again.stdout + again.stderr
    assert len(pd.read_parquet(out / "sweep=infra-tiny")) == 16

    status = run([str(VENV_BIN / "ray"), "job", "status", "--address", local_ray.dashboard_url, sid], infra_env, timeout=60)
    assert "succeeded" in (status.stdout + status.stderr).lower()
    t_direct = time.monotonic()

    # The nightly script: submission id oomsweep-<sweep>-<date>; the second call finds it and stops.
    cron = ROOT / "infra" / "cron" / "oomsweep-nightly.sh"
    cron_env = dict(infra_env, RAY_ADDRESS=local_ray.dashboard_url, OOMSWEEP_SWEEP=str(TINY.relative_to(ROOT)),
                    OOMSWEEP_OUTPUT=str(out), OOMSWEEP_DATE="2026-11-26", RAY_BIN=str(VENV_BIN / "ray"))
    first = run(["bash", str(cron)], cron_env, timeout=300, cwd="/")
    assert "submitting oomsweep-infra-tiny-2026-11-26:" in first.stderr
    second = run(["bash", str(cron)], cron_env, timeout=120, cwd="/")
    assert "oomsweep-infra-tiny-2026-11-26 SUCCEEDED: today's sweep already ran" in second.stderr
    assert "submitting" not in second.stderr
    # Same sweep, same output: the nightly run found every row stored and added none.
    df2 = pd.read_parquet(out / "sweep=infra-tiny")
    assert len(df2) == 16 and df2["execution_id"].nunique() == 1
    print(f"\nnightly script: {time.monotonic() - t_direct:.1f}s")
    print(f"ray job submit: head {t_head - t0:.1f}s, job {t_job - t_head:.1f}s, total {time.monotonic() - t0:.1f}s")

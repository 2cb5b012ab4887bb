"""Credentials planted in the environment never reach Parquet, MLflow or any log of a run."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rel_helpers import handa_sweep, oomsweep_cmd, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRETS = {
    "MLFLOW_TRACKING_TOKEN": "mlflowtok-5f1e0c9a7b3d4e2f",
    "MLFLOW_TRACKING_PASSWORD": "mlflowpw-0a9b8c7d6e5f4a3b",
    "AWS_SECRET_ACCESS_KEY": "awssecret-9c8b7a6f5e4d3c2b1a0f",
    "RAY_AUTH_TOKEN": "raytok-3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b",
    "GITHUB_TOKEN": "ghp_plantedplantedplanted0123456789",
}


def _grep_tree(root: Path) -> list[str]:
    """Files under root whose raw bytes contain a secret."""
    hits = []
    for f in root.rglob("*"):
        if not f.is_file() or f.is_symlink():
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        for name, value in SECRETS.items():
            if value.encode() in data:
                hits.append(f"{name} in {f}")
    return hits


def _parquet_text(f: Path) -> str:
    """Everything a Parquet file says, decompressed: schema metadata and every string value."""
    t = pq.read_table(f)
    parts = [repr(pq.read_schema(f).metadata), repr(pq.read_metadata(f).metadata)]
    for col in t.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            parts += [str(v) for v in col.to_pylist()]
    return "\n".join(parts)


def test_planted_credentials_never_written(tmp_path):
    ray_base = Path(tempfile.mkdtemp(prefix="oomsw-sec-", dir="/tmp"))  # short: Ray socket paths
    try:
        env = subprocess_env(**SECRETS, OOMSWEEP_RAY_TEMP_BASE=str(ray_base), OOMSWEEP_KEEP_RAY_TEMP="1")
        path = handa_sweep(tmp_path, "secrets", replicates=3)
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        p = subprocess.run(oomsweep_cmd("run", str(path), "--workers", "2", "--mlflow-uri", uri), cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stderr
        assert "MLflow: experiment" in p.stderr  # tracking really happened
        p2 = subprocess.run(oomsweep_cmd("report", "results"), cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
        assert p2.returncode == 0, p2.stderr

        for name, value in SECRETS.items():
            for stream in (p.stdout, p.stderr, p2.stdout, p2.stderr):
                assert value not in stream, f"{name} printed"

        # Parquet: decoded values and metadata (the raw bytes are compressed)
        files = list((tmp_path / "results").rglob("*.parquet"))
        assert files
        for f in files:
            text = _parquet_text(f)
            assert "sweep_hash" in text  # the provenance metadata was read
            for name, value in SECRETS.items():
                assert value not in text, f"{name} in {f}"

        # MLflow: every param, tag and metric key of every run, and the raw store and artifacts
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=uri)
        runs = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=5000)
        assert runs
        for r in runs:
            blob = repr(r.data.params) + repr(r.data.tags) + repr(r.data.metrics)
            for name, value in SECRETS.items():
                assert value not in blob, f"{name} in MLflow run {r.info.run_id}"

        # every file the run left: the MLflow store and artifacts, the Parquet files, and Ray's logs
        ray_files = [f for f in ray_base.rglob("*") if f.is_file()]
        assert any("logs" in f.parts for f in ray_files), "Ray's session logs were not kept for inspection"
        hits = _grep_tree(tmp_path) + _grep_tree(ray_base)
        assert not hits, hits
    finally:
        shutil.rmtree(ray_base, ignore_errors=True)

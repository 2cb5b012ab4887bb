"""Helpers for the fault-injection tests: sweep files, dataset checks, subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HANDA = ROOT / "configs" / "scenarios" / "handa-2018-11-14.yaml"

# A scenario whose event count grows linearly with the horizon and never settles (see the file's
# header): a horizon of 10^6 s is hours of wall time, while a horizon of 0.2 s takes milliseconds.
ENDLESS_SCENARIO = yaml.safe_load((ROOT / "configs" / "scenarios" / "rt-rr-hogs-throttled.yaml").read_text())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def handa_sweep(directory: Path, name: str = "rel", *, replicates: int = 6, output: str = "results", **over) -> Path:
    """A small real sweep of Handa's reproducer: 2 cells × 2 policies × `replicates`."""
    data = {
        "name": name,
        "base": str(HANDA),
        "grid": {"victim.sched_at_handover": ["unchanged", "idle"]},
        "policies": ["upstream_4_19", "timeout_backoff"],
        "replicates": replicates,
        "seed": 5,
        "output": output,
    }
    data.update(over)
    return write_yaml(Path(directory) / f"{name}.yaml", data)


def read_keys_everywhere(output: Path, sweep: str):
    """The dataset read by pyarrow, pandas and DuckDB: each must succeed; returns the pandas frame."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as pds

    root = Path(output) / f"sweep={sweep}"
    t = pds.dataset(str(root), format="parquet", partitioning="hive").to_table(
        columns=["policy", "cell_id", "replicate", "status"]
    )
    df = pd.read_parquet(root, columns=["policy", "cell_id", "replicate", "status"])
    assert len(df) == t.num_rows
    n = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    ).fetchall()[0][0]
    assert n == t.num_rows
    df["policy"] = df["policy"].astype(str)
    return df


def assert_exactly_once(df, expected: int) -> None:
    keys = df[["cell_id", "policy", "replicate"]]
    dup = keys[keys.duplicated(keep=False)]
    assert dup.empty, f"duplicate rows:\n{dup}"
    assert len(df) == expected, f"{len(df)} rows, expected {expected}"


def oomsweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweeps", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(k, None)
    env.update(RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path):
    """run_cli(*args, timeout=..., env=...) -> CompletedProcess of `python -m sweeps ...` in tmp_path."""

    def run(*args: str, timeout: float = 240, env: dict | None = None, cwd: Path | None = None):
        return subprocess.run(
            oomsweep_cmd(*args), cwd=cwd or tmp_path, env=env or subprocess_env(),
            capture_output=True, text=True, timeout=timeout,
        )

    return run

"""Two Ray nodes on one machine: rows are computed on both, and the results equal a one-node run.

A head (1 CPU) and a second node started with `ray start --address` on the same host (1 CPU) make a
real two-raylet cluster; simulation tasks take one CPU each, so the batches must spread.  Seeds
depend only on (sweep seed, cell, replicate), so where a row ran must not change what it contains.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from infra_harness import VENV_BIN, run

pytestmark = pytest.mark.integration

KEY = ["cell_id", "policy", "replicate"]
# Where and when a row ran; everything else is the row's content.
PLACEMENT = {"node_id", "worker_pid", "wall_s", "execution_id", "sweep"}


def _run_sweep(sweep, address: str, out, env) -> pd.DataFrame:
    run([str(VENV_BIN / "oomsweep"), "run", str(sweep), "--address", address, "--output", str(out), "--no-mlflow"],
        env, timeout=300)
    df = pd.read_parquet(out / "sweep=infra-tiny")
    df["policy"] = df["policy"].astype(str)
    return df.sort_values(KEY).reset_index(drop=True)


def test_rows_spread_over_two_nodes_with_results_identical_to_one_node(local_ray, infra_env, tiny_sweep, tmp_path):
    t0 = time.monotonic()
    local_ray.start_head(num_cpus=1, dashboard=False)
    one = _run_sweep(tiny_sweep, local_ray.gcs_address, tmp_path / "one", infra_env)
    t_one = time.monotonic()

    local_ray.add_worker(num_cpus=1)
    deadline = time.monotonic() + 60
    while local_ray.alive_nodes() < 2:
        assert time.monotonic() < deadline, "second node did not join"
        time.sleep(1)
    two = _run_sweep(tiny_sweep, local_ray.gcs_address, tmp_path / "two", infra_env)
    t_two = time.monotonic()

    assert len(one) == len(two) == 16
    assert (one["status"] == "ok").all() and (two["status"] == "ok").all()
    assert one["node_id"].nunique() == 1
    assert two["node_id"].nunique() == 2, two.groupby("node_id").size()
    assert set(one["node_id"]) < set(two["node_id"])  # the head took part in both runs

    content = [c for c in one.columns if c not in PLACEMENT]
    assert "lockup" in content and "max_stall_s" in content and "seed" in content
    pd.testing.assert_frame_equal(one[content], two[content], check_dtype=False, check_categorical=False)
    print(f"\ntwo nodes: head + one-node run {t_one - t0:.1f}s, worker + two-node run {t_two - t_one:.1f}s")

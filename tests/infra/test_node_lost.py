"""A cluster node lost mid-sweep: the head finishes the sweep, every row exactly once, same content.

A head (1 CPU) and a second node (1 CPU) on one machine; the second node's processes carry their own
marker, so the test can kill exactly that node (raylet, workers and all) while batches run on it.
Ray retries a task whose node died (max_retries), and seeds depend only on (sweep seed, cell,
replicate), so the rows the head recomputes are the rows the lost node would have written.
"""

from __future__ import annotations

import re
from pathlib import Path
import subprocess
import threading
import time
import uuid

import pandas as pd
import pytest
import yaml

from infra_harness import VENV_BIN, base_env, kill_marked, marked_pids, run

pytestmark = pytest.mark.integration

KEY = ["cell_id", "policy", "replicate"]
PLACEMENT = {"node_id", "worker_pid", "wall_s", "execution_id", "sweep"}


def _sweep(tmp_path, tiny_sweep) -> Path:
    doc = yaml.safe_load(tiny_sweep.read_text())
    doc["base"] = str((tiny_sweep.parent / doc["base"]).resolve())
    doc["name"] = "node-lost"
    doc["replicates"] = 60                      # 240 rows: several seconds on two 1-CPU nodes
    path = tmp_path / "node-lost.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _read(out) -> pd.DataFrame:
    df = pd.read_parquet(out / "sweep=node-lost")
    df["policy"] = df["policy"].astype(str)
    return df.sort_values(KEY).reset_index(drop=True)


def test_head_finishes_the_sweep_when_the_second_node_dies(local_ray, infra_env, tiny_sweep, tmp_path):
    sweep = _sweep(tmp_path, tiny_sweep)
    local_ray.start_head(num_cpus=1, dashboard=False)
    node_marker = f"oomsweep-node2-{uuid.uuid4().hex[:8]}"
    node_env = base_env(node_marker)
    try:
        local_ray.env, saved = node_env, local_ray.env   # start the second node under its own marker
        local_ray.add_worker(num_cpus=1)
        local_ray.env = saved
        deadline = time.monotonic() + 60
        while local_ray.alive_nodes() < 2:
            assert time.monotonic() < deadline, "second node did not join"
            time.sleep(1)

        out = tmp_path / "cluster"
        cmd = [str(VENV_BIN / "oomsweep"), "run", str(sweep), "--address", local_ray.gcs_address,
               "--output", str(out), "--no-mlflow"]
        proc = subprocess.Popen(cmd, env={**infra_env, "OOMSWEEP_PROGRESS_SECONDS": "0.3"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        # kill the second node once rows are coming back, well before the end
        killed = 0
        done_at_kill = 0
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline and not killed:
            time.sleep(0.1)
            done = [int(m.group(1)) for line in list(lines) if (m := re.search(r"(\d+)/240 rows", line))]
            if done and 10 <= done[-1] < 200:
                done_at_kill = done[-1]
                killed = kill_marked(node_marker, grace_s=0.5)
        proc.wait(timeout=300)
        reader.join(timeout=10)
        stderr = "".join(lines)
        assert killed, f"never saw the sweep mid-way:\n{stderr[-2000:]}"
        assert done_at_kill < 240
        assert proc.returncode == 0, f"exit {proc.returncode}\n{stderr[-3000:]}"
        assert not marked_pids(node_marker)
    finally:
        kill_marked(node_marker, grace_s=0.5)

    cluster = _read(out)
    assert len(cluster) == 240 and not cluster.duplicated(KEY).any()
    assert (cluster["status"] == "ok").all()

    run([str(VENV_BIN / "oomsweep"), "run", str(sweep), "--serial", "--output", str(tmp_path / "serial"),
         "--no-mlflow"], infra_env, timeout=300)
    serial = _read(tmp_path / "serial")
    content = [c for c in cluster.columns if c not in PLACEMENT]
    pd.testing.assert_frame_equal(cluster[content], serial[content], check_dtype=False, check_categorical=False)

"""Load: the driver's memory does not grow with the row count; resume reads only its own sweep.

Memory is measured with tracemalloc (Python allocations of the driver process), which is exact and
does not depend on the machine's load.  benchmarks/bench_memory.py measures peak RSS at 10^5-10^6 rows.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from sweeps.run.runner import RunOptions, run_sweep

from rel_helpers import ENDLESS_SCENARIO, assert_exactly_once, read_keys_everywhere, write_yaml

pytestmark = pytest.mark.timeout(300)

CHEAP = {**ENDLESS_SCENARIO, "horizon_s": 0.002}


def _cheap_sweep(tmp_path: Path, name: str, replicates: int) -> Path:
    return write_yaml(tmp_path / f"{name}.yaml", {
        "name": name, "base": CHEAP, "grid": {"machine.cpus": [1, 2]}, "policies": ["upstream_4_19"],
        "replicates": replicates, "seed": 1, "output": str(tmp_path / "results"),
    })


def _peak_bytes(tmp_path: Path, name: str, replicates: int) -> int:
    """Peak Python memory of the driver over one run on Ray (the simulations run in the workers)."""
    path = _cheap_sweep(tmp_path, name, replicates)
    # small batches: both sizes reach the steady batch size early, so what is compared is what grows with rows
    opts = RunOptions(no_mlflow=True, workers=2, flush_rows=250, flush_seconds=1e9, target_batch_s=0.05)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        res = run_sweep(path, opts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.exit_code == 0 and res.rows_run == 2 * replicates
    return peak - base


@pytest.mark.slow
def test_driver_memory_does_not_grow_with_rows(tmp_path, capsys, ray_session):
    _peak_bytes(tmp_path, "warm", 50)  # imports and caches outside the measurement
    small = _peak_bytes(tmp_path, "small", 500)  # 1,000 rows
    large = _peak_bytes(tmp_path, "large", 2500)  # 5,000 rows
    capsys.readouterr()
    print(f"\ndriver peak traced memory: 1,000 rows {small / 1e6:.1f} MB, 5,000 rows {large / 1e6:.1f} MB")
    # 5x the rows; bounded buffers mean the peak stays put (O(rows) growth would be about 5x)
    assert large < 1.5 * small, (small, large)


def test_resume_reads_only_its_own_sweep(tmp_path):
    """100 earlier sweeps in the output, each file unreadable: touching any of them would fail the run."""
    out = tmp_path / "results"
    for i in range(100):
        pdir = out / f"sweep=old{i:03d}" / "policy=upstream_4_19"
        pdir.mkdir(parents=True)
        (pdir / "part-0-garbage.parquet").write_bytes(b"not a parquet file at all" * 10)
    path = _cheap_sweep(tmp_path, "mine", 3)
    opts = RunOptions(executor="serial", no_mlflow=True)
    first = run_sweep(path, opts)
    assert first.exit_code == 0 and first.rows_run == 6
    # raise the replicates: resume must read the stored keys of `mine` only
    path = _cheap_sweep(tmp_path, "mine", 5)
    again = run_sweep(path, opts)
    assert again.exit_code == 0 and again.rows_stored_before == 6 and again.rows_run == 4
    import pandas as pd

    df = pd.read_parquet(out / "sweep=mine", columns=["policy", "cell_id", "replicate", "status"])
    df["policy"] = df["policy"].astype(str)
    assert_exactly_once(df, 10)

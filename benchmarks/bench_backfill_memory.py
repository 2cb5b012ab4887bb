"""Peak RSS of the summary behind `oomsweep log` (backfill): the streaming scan (`sweeps.tracking.mlflow_log._scan`)
against the former way (every row but scenario_json read into pandas, then summarised).

    python benchmarks/bench_backfill_memory.py [--rows 400000 [--rows 1200000 ...]] [--cells 500]

For each size it writes a synthetic sweep (2 policies, `--cells` cells, the contract's columns,
20,000-row files) to a temp dir, then summarises it in a fresh subprocess each way and prints the
peak RSS above the process's RSS after imports, the seconds, and whether the per-policy and per-cell
tables came out identical. Prints measured figures only; it never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sweeps")]  # this checkout; tracking_oracle (the old summary)
SWEEP = "mem"
POLICIES = ("upstream_4_19", "timeout_backoff[timeout_s=2.0]")


def generate(output: Path, rows: int, cells: int) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeps.storage import dataset as storage

    rng = np.random.default_rng(1)
    provenance = json.dumps({"sweep": SWEEP, "sweep_hash": "ab" * 32, "seed": 1, "model_version": "0.1.0"}).encode()
    replicates = max(1, rows // (cells * len(POLICIES)))
    step = max(1, 20_000 // cells)
    for policy in POLICIES:
        part = storage.partition_dir(output, SWEEP, policy)
        part.mkdir(parents=True, exist_ok=True)
        for first in range(0, replicates, step):
            reps = np.arange(first, min(replicates, first + step))
            n = cells * len(reps)
            ci = np.repeat(np.arange(cells), len(reps))
            lockup = rng.random(n) < 0.4
            table = pa.table({
                "policy_name": [policy.split("[")[0]] * n,
                "policy_options": [json.dumps({"timeout_s": 2.0} if "[" in policy else {})] * n,
                "cell_id": [f"{c:016x}" for c in ci], "cell_index": ci, "replicate": np.tile(reps, cells),
                "seed": rng.integers(0, 2**62, n), "execution_id": ["e1"] * n, "model_version": ["0.1.0"] * n,
                "victim.sched_at_handover": np.where(ci % 2 == 0, "unchanged", "idle"),
                "groups.0.sched.rt_priority": ci % 99,
                "scenario_json": ['{"handover": "idle", "pad": "' + "x" * 200 + '"}'] * n,
                "lockup": lockup, "lockup_reason": np.where(lockup, "stall", ""),
                "max_stall_s": rng.uniform(0, 60, n), "first_progress_s": rng.uniform(0, 2, n),
                "first_kill_s": rng.uniform(0, 1, n), "kills": rng.integers(1, 4, n),
                "extra_kills": rng.integers(0, 3, n), "handed_over": rng.random(n) < 0.4,
                "handovers": np.ones(n, int), "oom_skip_by": ["reaper"] * n, "reaper_attempts": np.full(n, 2),
                "memory_freed_mb": np.full(n, 180.0), "panic": np.zeros(n, bool),
                "victims_pending_at_end": lockup.astype(int), "sim_time_s": np.full(n, 120.0),
                "sim_events": np.full(n, 5000), "cpu_s.children": rng.uniform(0, 5, n),
                "cpu_s.oom_reaper": rng.uniform(0, 1, n), "status": ["ok"] * n, "error": [""] * n,
                "wall_s": rng.exponential(0.01, n), "node_id": ["n1"] * n, "worker_pid": np.full(n, 42),
            }).replace_schema_metadata({b"oomsweep.provenance": provenance})
            pq.write_table(table, part / f"{uuid.uuid4().hex}.parquet")
    return replicates * cells * len(POLICIES)


def summarise(mode: str, output: Path, result: Path) -> None:
    """In a fresh process: one way's tables, pickled to `result`, and its memory on stdout."""
    import tracking_oracle

    from sweeps.tracking import mlflow_log as tracking

    def status(field: str) -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

    base = status("VmRSS")
    started = time.monotonic()
    if mode == "pandas":
        rows = tracking_oracle.read_all_rows(output, SWEEP)
        table, cells = tracking_oracle.summarise(rows, ("policy",)), tracking_oracle.cell_summary(rows, tracking.grid_columns(rows))
    else:
        summary = tracking._scan(output, SWEEP, None, "e1")
        table, cells = summary.policy_table(), summary.cell_table()
    seconds = time.monotonic() - started
    table.to_pickle(result.with_suffix(".table.pkl"))
    cells.to_pickle(result.with_suffix(".cells.pkl"))
    print(json.dumps({"peak_mb": (status("VmHWM") - base) / 1024, "seconds": seconds}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="rows of a synthetic sweep (repeatable)")
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        summarise(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    import pandas as pd

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"{'rows':>9} {'way':<7} {'peak MB above imports':>22} {'seconds':>8}  tables")
    for rows in args.rows or [400_000]:
        with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
            output = Path(tmp) / "out"
            n = generate(output, rows, args.cells)
            got = {}
            for mode in ("pandas", "scan"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(output), f"{tmp}/{mode}"],
                                     capture_output=True, text=True, env=env, check=True)
                got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            same = all(pd.read_pickle(f"{tmp}/pandas.{k}.pkl").equals(pd.read_pickle(f"{tmp}/scan.{k}.pkl"))
                       for k in ("table", "cells"))
            for mode in ("pandas", "scan"):
                print(f"{n:>9} {mode:<7} {got[mode]['peak_mb']:>22.0f} {got[mode]['seconds']:>8.1f}  "
                      f"{'identical' if same else 'DIFFERENT'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

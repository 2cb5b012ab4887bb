"""Peak RSS of the oomsweep driver over a large sweep of a cheap scenario on local Ray.

    python benchmarks/bench_memory.py [--rows 1000000] [--workers N] [--cells 100] [--keep DIR]

The driver (this process) runs `run_sweep` exactly as `oomsweep run --no-mlflow` does; the
simulations run in Ray's worker processes.  It samples the driver's RSS every 0.5 s and prints it at
each tenth of the rows, then the peak (VmHWM).  Bounded memory shows as a flat RSS after the first
tenth; anything O(rows) shows as growth.  Goal (issue 5): peak < 500 MB at 1,000,000 rows.

MLflow is off: this measures the sweep, not `log_sweep` (its summary keeps two floats per row,
see docs/reliability.md).  Prints measured figures only; never fails on a number.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# RT round-robin hogs throttled every 1 ms next to CFS hogs, for 2 ms of simulated time: ~1-3 ms per row.
ROOT = Path(__file__).resolve().parent.parent
CHEAP = {
    **yaml.safe_load((ROOT / "configs" / "scenarios" / "rt-rr-hogs-throttled.yaml").read_text()),
    "horizon_s": 0.002,
    "lockup_after_s": 0.001,
}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", help="write the dataset here (default: a temp dir, removed)")
    args = ap.parse_args()

    from sweeps.run.runner import RunOptions, run_sweep

    cells = max(1, args.cells)
    replicates = max(1, -(-args.rows // cells))
    tmp = tempfile.TemporaryDirectory(prefix="bench-memory-")
    out = Path(args.keep) if args.keep else Path(tmp.name) / "results"
    sweep = Path(tmp.name) / "memory.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "bench-memory",
        "base": CHEAP,
        "grid": {"costs.exit_ms": [round(0.01 + i * 0.001, 4) for i in range(cells)]},
        "policies": ["upstream_4_19"],
        "replicates": replicates,
        "seed": 1,
        "output": str(out),
    }))
    total = cells * replicates
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append((time.monotonic(), _status_kb("VmRSS")))

    rss_before = _status_kb("VmRSS")
    th = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    th.start()
    res = run_sweep(sweep, RunOptions(workers=args.workers, no_mlflow=True, yes=True), stdout=open(os.devnull, "w"))
    done.set()
    th.join()
    wall = time.monotonic() - t0
    peak_kb = _status_kb("VmHWM")

    print(f"bench_memory: {res.rows_run:,} of {total:,} rows ({cells} cells × {replicates} replicates) "
          f"in {wall:.0f} s ({res.rows_run / max(wall, 1e-9):,.0f} rows/s), exit {res.exit_code}")
    print(f"  driver RSS before the run {rss_before / 1024:.0f} MB; peak (VmHWM) {peak_kb / 1024:.0f} MB "
          f"(goal < 500 MB at 1,000,000 rows)")
    if samples:
        print("  driver RSS over the run (by elapsed tenth of the wall time):")
        start, end = samples[0][0], samples[-1][0]
        for k in range(1, 11):
            cut = start + (end - start) * k / 10
            rss = max((r for t, r in samples if t <= cut), default=samples[0][1])
            print(f"    {k * 10:3d} %: max RSS so far {rss / 1024:6.0f} MB")
    tmp.cleanup()
    return 0 if res.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

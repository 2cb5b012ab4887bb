"""Runs per second of `simulate` on the three reference scenarios, and the model's event rate
against a bare SimPy timeout loop measured in the same process.

    python benchmarks/bench_model.py [--runs 40]

Prints measured figures only; it never fails on a timing. Times are CPU time of this process
(`time.process_time`), so other load on the machine disturbs the figures less than wall time would;
both the model and the bare loop are measured the same way, in the same run. `events/run` is
`Outcome.sim_events` per run: when a change saves SimPy events (say, a run() completion resumed in
place), events/s falls while runs/s rises, so read the two together.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import simpy

ROOT = Path(__file__).resolve().parent.parent
# The model of *this* checkout, not the editable install (which may point at another worktree).
sys.path.insert(0, str(ROOT))

from oommodel import Scenario, simulate  # noqa: E402

SCENARIOS = ("handa-2018-11-14.yaml", "global-normal.yaml", "all-cpus-rt-busy.yaml")


def bare_simpy_rate(n: int = 200_000) -> float:
    """Events per second of the cheapest SimPy process: one timeout after another."""
    env = simpy.Environment()

    def loop():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(loop())
    t0 = time.process_time()
    env.run()
    return n / (time.process_time() - t0)


def bench(path: Path, policy: str, runs: int) -> tuple[float, float, float]:
    sc = Scenario.from_yaml(path)
    simulate(sc, policy, 0)                       # warm caches and imports
    times, events = [], 0
    for seed in range(runs):
        t0 = time.process_time()
        out = simulate(sc, policy, seed)
        times.append(time.process_time() - t0)
        events += out.sim_events
    return statistics.median(times), events / sum(times), events / runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--policy", default="handoff_rfc_v2")
    args = ap.parse_args()
    bare = bare_simpy_rate()
    print(f"bare SimPy timeout loop: {bare:,.0f} events/s")
    print(f"{'scenario':28} {'policy':16} {'median ms/run':>14} {'runs/s':>8} {'events/s':>10} {'vs bare':>8}"
          f" {'events/run':>10}")
    for name in SCENARIOS:
        median, rate, per_run = bench(ROOT / "configs" / "scenarios" / name, args.policy, args.runs)
        print(f"{name:28} {args.policy:16} {median * 1e3:14.2f} {1 / median:8.1f} {rate:10,.0f} {rate / bare:8.2f}"
              f" {per_run:10,.0f}")


if __name__ == "__main__":
    main()

"""CPU time per `simulate` run of two checkouts of the model, measured alternately in one session.

    python benchmarks/compare_trees.py OLD_TREE NEW_TREE [--rounds 5] [--seeds 20] [--policy P]

The machine is shared and its speed drifts by +-20 % from hour to hour, so two benchmarks run at
different times do not compare. Here each round runs every seed of every scenario once in a fresh
subprocess of each tree (importing that checkout's `oommodel`, not the installed one), the order
of the two trees alternating from round to round. A seed's time is the minimum over the rounds
(the run least disturbed by other load); the figure per scenario is the median over the seeds, and
the ratio new/old is the median of the per-seed ratios, with a distribution-free 95 % interval for
that median (order statistics of the per-seed ratios, binomial coverage). Times are
`time.process_time()` of the run alone (building and running the World).

Prints measured figures only; it never fails on a timing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

SCENARIOS = ("handa-2018-11-14", "global-normal", "all-cpus-rt-busy")

WORKER = r"""
import json, sys, time
tree, policy, seeds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, tree)
from oommodel import Scenario, simulate
out = {}
for name in sys.argv[4:]:
    sc = Scenario.from_yaml(f"{tree}/configs/scenarios/{name}.yaml")
    simulate(sc, policy, seeds)                  # warm caches and imports (a seed not measured)
    times = []
    for seed in range(seeds):
        t0 = time.process_time()
        simulate(sc, policy, seed)
        times.append(time.process_time() - t0)
    out[name] = times
print(json.dumps(out))
"""


def measure(tree: Path, policy: str, seeds: int, scenarios: tuple[str, ...]) -> dict[str, list[float]]:
    """One round of one tree: CPU seconds per seed and scenario, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", WORKER, str(tree), policy, str(seeds), *scenarios],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def median_interval(xs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median: the widest-inward pair of order statistics
    (x_(k), x_(n+1-k)) whose binomial(n, 1/2) coverage is still >= level."""
    s = sorted(xs)
    n = len(s)
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    lo_k = 0
    for k in range(1, n // 2 + 1):              # coverage of (x_(k), x_(n+1-k)) = P(k <= B <= n-k)
        if sum(pmf[k:n - k + 1]) >= level:
            lo_k = k
        else:
            break
    if lo_k == 0:
        return s[0], s[-1]
    return s[lo_k - 1], s[n - lo_k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--policy", default="handoff_rfc_v2")
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    args = ap.parse_args()
    scenarios = tuple(args.scenarios)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    best: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for which in order:
            got = measure(trees[which], args.policy, args.seeds, scenarios)
            for name, times in got.items():
                prev = best[which].get(name)
                best[which][name] = times if prev is None else [min(a, b) for a, b in zip(prev, times)]
        print(f"round {r + 1}/{args.rounds} done ({' then '.join(order)})", file=sys.stderr)
    print(f"policy {args.policy}; {args.seeds} seeds; min over {args.rounds} alternating rounds per seed; "
          f"old = {trees['old']}, new = {trees['new']}")
    print(f"{'scenario':22} {'old median ms':>14} {'new median ms':>14} {'new/old (median of per-seed ratios)':>36} "
          f"{'95 % interval':>16}")
    for name in scenarios:
        old, new = best["old"][name], best["new"][name]
        ratios = [n / o for n, o in zip(new, old)]
        lo, hi = median_interval(ratios)
        print(f"{name:22} {statistics.median(old) * 1e3:14.2f} {statistics.median(new) * 1e3:14.2f} "
              f"{statistics.median(ratios):36.3f} {f'[{lo:.3f}, {hi:.3f}]':>16}")


if __name__ == "__main__":
    main()

"""How the sweep statistics behave at the sample sizes the sweeps use: measured, not asserted.

    python benchmarks/bench_stats.py coverage            # Wilson: exact coverage over n and p
    python benchmarks/bench_stats.py paired [--reps N]   # Newcombe paired difference: simulated coverage
    python benchmarks/bench_stats.py adaptive RESULTS --sweep NAME [--half-width 0.05]

coverage: for each n the sweeps use (20 at quick.yaml, 30 = the adaptive minimum, 50, 100, 200 at
handoff-vs-priority.yaml, 400) and each true p, the probability that the 95 % Wilson interval
(sweeps' stats.wilson) contains p. Computed exactly, by summing the binomial pmf over the k whose
interval covers p, so the figures carry no simulation error. Printed at the p the sweeps meet, and
as the mean and the minimum over a fine grid of p in [0.001, 0.999].

paired: the coverage of the Newcombe (1998b) interval for P(a) - P(b) on paired outcomes
(sweeps' stats.paired_difference_counts), simulated with N draws of the 2x2 table of pairs from a
multinomial at each (n, p_a, p_b, correlation); the correlation stands for the common random
numbers the policies of a cell share. The Monte Carlo standard error is printed beside each figure.

adaptive: takes each (cell, policy) lockup probability measured in a stored sweep as the truth,
replays the adaptive rule of the runner (sweeps' stats.adaptive_next_batch: min, then batches until
every policy of the cell has Wilson half-width <= target, at most max) with binomial draws, and
prints the runs it used against fixed replication that reaches the same half-width: the fixed n that
guarantees it whatever p is (p = 1/2), and the fixed n an oracle that knew the worst cell's p would
pick. It also prints how often the adaptive intervals cover the true p: stopping on the data
makes them slightly anti-conservative.

Prints measured figures only; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweeps.analysis.stats import adaptive_next_batch, paired_difference_counts, wilson  # noqa: E402

SWEEP_N = (20, 30, 50, 100, 200, 400)
SWEEP_P = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


# ------------------------------------------------------------------ Wilson coverage (exact)


def wilson_coverage(n: int, p: float, confidence: float = 0.95) -> float:
    """P(Wilson interval of X/n contains p), X ~ Binomial(n, p): exact sum over k."""
    ks = np.arange(n + 1)
    covers = np.array([(lambda w: w.low <= p <= w.high)(wilson(int(k), n, confidence)) for k in ks])
    return float(binom.pmf(ks, n, p)[covers].sum())


def _wilson_bounds(n: int) -> tuple[np.ndarray, np.ndarray]:
    lows, highs = zip(*[(w.low, w.high) for w in (wilson(k, n) for k in range(n + 1))])
    return np.array(lows), np.array(highs)


def coverage_table(fine: int = 999) -> None:
    grid = np.linspace(0.001, 0.999, fine)
    print("Wilson 95 % interval: exact coverage P(low <= p <= high), X ~ Binomial(n, p)")
    head = "     n " + "".join(f"{p:>8g}" for p in SWEEP_P) + "   mean    min  p<0.94"
    print(head)
    print("-" * len(head))
    for n in SWEEP_N:
        lows, highs = _wilson_bounds(n)
        ks = np.arange(n + 1)

        def cov(p: float) -> float:
            mask = (lows <= p) & (p <= highs)
            return float(binom.pmf(ks[mask], n, p).sum())

        at = [cov(p) for p in SWEEP_P]
        fine_cov = np.array([cov(float(p)) for p in grid])
        low_share = float((fine_cov < 0.94).mean())
        argmin = float(grid[int(fine_cov.argmin())])
        print(f"{n:>6d} " + "".join(f"{c:8.4f}" for c in at)
              + f" {fine_cov.mean():6.4f} {fine_cov.min():6.4f}  {low_share:5.1%}   (min at p={argmin:.3f})")
    print(f"mean and min over {fine} values of p in [0.001, 0.999]; p<0.94: share of those p "
          "where coverage is below 0.94")


# ------------------------------------------------------------------ Newcombe paired coverage (simulated)


@dataclass(frozen=True)
class PairSetting:
    p_a: float
    p_b: float
    rho: float  # correlation of the two binary outcomes of a pair

    def variance_ratio(self) -> float:
        va, vb = self.p_a * (1 - self.p_a), self.p_b * (1 - self.p_b)
        return (va + vb - 2 * self.rho * math.sqrt(va * vb)) / (va + vb)

    def cells(self) -> tuple[float, float, float, float]:
        """(both, a only, b only, neither) probabilities of one pair."""
        sa = math.sqrt(self.p_a * (1 - self.p_a))
        sb = math.sqrt(self.p_b * (1 - self.p_b))
        both = self.p_a * self.p_b + self.rho * sa * sb
        e, f, g = both, self.p_a - both, self.p_b - both
        h = 1.0 - e - f - g
        if min(e, f, g, h) < -1e-12:
            raise ValueError(f"{self}: no joint distribution with these margins and correlation")
        return (max(e, 0.0), max(f, 0.0), max(g, 0.0), max(h, 0.0))


PAIR_SETTINGS = (
    PairSetting(0.05, 0.05, 0.9),   # two policies that lock up on the same rare seeds
    PairSetting(0.10, 0.05, 0.6),
    PairSetting(0.30, 0.10, 0.4),
    PairSetting(0.50, 0.40, 0.8),
    PairSetting(0.20, 0.20, 0.0),   # no pairing benefit: the outcomes are independent
    PairSetting(0.02, 0.00, 0.0),   # one policy never locks up
)


@functools.lru_cache(maxsize=None)
def _newcombe(e: int, f: int, g: int, h: int) -> tuple[float, float]:
    d = paired_difference_counts(e, f, g, h)
    return d.low, d.high


def paired_coverage(setting: PairSetting, n: int, reps: int, rng: np.random.Generator) -> tuple[float, float]:
    probs = np.array(setting.cells())
    probs = probs / probs.sum()
    tables = rng.multinomial(n, probs, size=reps)
    truth = setting.p_a - setting.p_b
    hits = 0
    for e, f, g, h in tables:
        low, high = _newcombe(int(e), int(f), int(g), int(h))
        hits += low <= truth <= high
    cov = hits / reps
    return cov, math.sqrt(max(cov * (1 - cov), 1e-12) / reps)


def paired_table(reps: int, seed: int) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    print(f"Newcombe (method 10) 95 % interval for P(a) - P(b) on n pairs: simulated coverage "
          f"({reps} tables per figure, seed {seed}; +- is one Monte Carlo standard error)")
    head = "  p_a   p_b  rho  var " + "".join(f"{'n=' + str(n):>15}" for n in SWEEP_N)
    print(head)
    print("-" * len(head))
    for s in PAIR_SETTINGS:
        figures = []
        for n in SWEEP_N:
            cov, se = paired_coverage(s, n, reps, rng)
            figures.append(f"{cov:8.4f}+-{se:.4f}")
        print(f"{s.p_a:5.2f} {s.p_b:5.2f} {s.rho:4.1f} {s.variance_ratio():4.2f} " + "".join(f"{x:>15}" for x in figures))
    print("var: variance of the paired difference / variance with independent seeds (exact, from p_a, p_b, rho):")
    print("     what pairing saves; 1 / var is how many times the runs independent seeds would need")


# ------------------------------------------------------------------ adaptive vs fixed replication


@dataclass(frozen=True)
class _Adaptive:
    ci_half_width: float
    min: int
    max: int
    batch: int


def fixed_n_for(p: float, target: float) -> int:
    """Smallest n whose Wilson half-width at k = round(n p) is <= target (n p: the expected count)."""
    n = 1
    while wilson(int(round(n * p)), n).half_width > target:
        n += 1 if n < 50 else max(1, n // 50)
    while n > 1 and wilson(int(round((n - 1) * p)), n - 1).half_width <= target:
        n -= 1
    return n


def replay_adaptive(ps: np.ndarray, rule: _Adaptive, rng: np.random.Generator) -> tuple[int, np.ndarray, np.ndarray]:
    """One replay of the adaptive rule over one cell; ps: the true p of each policy of the cell.

    Returns (replicates used, lockups per policy, whether each policy's final interval covers p)."""
    n = 0
    k = np.zeros(len(ps), dtype=int)
    while True:
        step = adaptive_next_batch([(int(x), n) for x in k], n, rule)
        if step == 0:
            break
        k += rng.binomial(step, ps)
        n += step
    covers = np.array([(lambda w: w.low <= p <= w.high)(wilson(int(kk), n)) for kk, p in zip(k, ps)])
    return n, k, covers


def adaptive_table(results: str, sweep: str, target: float, reps: int, seed: int, rule_min: int,
                   rule_max: int, batch: int) -> None:

    from sweeps.storage.dataset import read_sweep
    df = read_sweep(results, sweep, columns=["cell_id", "policy", "lockup", "status"])
    df = df[df["status"] == "ok"]
    p_cell = df.groupby(["cell_id", "policy"], observed=True)["lockup"].mean().unstack("policy")
    p_cell = p_cell.dropna()
    cells, policies = p_cell.shape
    rule = _Adaptive(target, rule_min, rule_max, batch)
    rng = np.random.Generator(np.random.PCG64(seed))
    used = np.zeros((reps, cells), dtype=int)
    cover_hits = 0
    cover_total = 0
    t0 = time.process_time()
    for r in range(reps):
        for c, ps in enumerate(p_cell.to_numpy(dtype=float)):
            n, _, covers = replay_adaptive(ps, rule, rng)
            used[r, c] = n
            cover_hits += int(covers.sum())
            cover_total += len(covers)
    cpu = time.process_time() - t0
    per_cell_worst = p_cell.apply(lambda row: max(fixed_n_for(float(p), target) for p in row), axis=1)
    n_guarantee = min(fixed_n_for(0.5, target), rule_max)
    n_oracle = min(int(per_cell_worst.max()), rule_max)
    adaptive_runs = used.sum(axis=1) * policies
    mean_runs = float(adaptive_runs.mean())
    lo, hi = np.percentile(adaptive_runs, [2.5, 97.5])
    print(f"adaptive replication on sweep '{sweep}' ({results}): {cells} cells x {policies} policies, "
          f"true p = the stored per-cell lockup rate (n = {int(df.groupby(['cell_id', 'policy'], observed=True).size().median())} rows per cell and policy)")
    print(f"rule: ci_half_width {target}, min {rule_min}, batch {batch}, max {rule_max}; {reps} replays, seed {seed}")
    print(f"  adaptive runs            {mean_runs:10.0f}   (95 % of replays in [{lo:.0f}, {hi:.0f}])")
    print(f"  fixed, any p (p = 1/2)   {n_guarantee * cells * policies:10d}   ({n_guarantee} replicates per cell)"
          f"   adaptive/fixed = {mean_runs / (n_guarantee * cells * policies):.3f}")
    print(f"  fixed, oracle worst p    {n_oracle * cells * policies:10d}   ({n_oracle} replicates per cell)"
          f"   adaptive/fixed = {mean_runs / (n_oracle * cells * policies):.3f}")
    print(f"  replicates per cell (adaptive): median {int(np.median(used))}, "
          f"max {int(used.max())}; cells that hit max: {float((used == rule_max).mean()):.1%}")
    cov = cover_hits / cover_total
    print(f"  coverage of the final Wilson intervals: {cov:.4f} +- {math.sqrt(cov * (1 - cov) / cover_total):.4f} "
          f"(nominal 0.95; {cover_total} intervals)")
    print(f"  ({cpu:.1f} s CPU)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("coverage")
    pp = sub.add_parser("paired")
    pp.add_argument("--reps", type=int, default=20000)
    pp.add_argument("--seed", type=int, default=12)
    ad = sub.add_parser("adaptive")
    ad.add_argument("results")
    ad.add_argument("--sweep", required=True)
    ad.add_argument("--half-width", type=float, default=0.05)
    ad.add_argument("--min", type=int, default=30)
    ad.add_argument("--max", type=int, default=2000)
    ad.add_argument("--batch", type=int, default=30)
    ad.add_argument("--reps", type=int, default=20)
    ad.add_argument("--seed", type=int, default=12)
    a = ap.parse_args(argv)
    if a.what == "coverage":
        coverage_table()
    elif a.what == "paired":
        paired_table(a.reps, a.seed)
    else:
        adaptive_table(a.results, a.sweep, a.half_width, a.reps, a.seed, a.min, a.max, a.batch)


if __name__ == "__main__":
    main()

"""Statistics over sweep outcomes: pure functions, pinned by tests against published values.

- wilson(): the Wilson (1927) score interval, method 3 of Newcombe (1998a); correct at k = 0 and k = n,
  where the Wald interval collapses to a point.
- paired_difference(): Newcombe (1998b) method 10 ("square-and-add" of Wilson intervals with the
  continuity-corrected phi) for the difference of two proportions measured on the same pairs, with
  McNemar's exact test. Policies in a sweep share seeds per (cell, replicate), so their outcomes are
  paired and this is the right comparison; treating them as independent would waste the pairing.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Sequence

__all__ = [
    "Proportion",
    "wilson",
    "PairedDiff",
    "paired_difference",
    "paired_difference_counts",
    "mcnemar_exact",
    "quantile",
    "survival",
    "wilson_half_width",
    "adaptive_needs_more",
    "adaptive_next_batch",
]


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(k: int, n: int) -> None:
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


@dataclass(frozen=True)
class Proportion:
    """k events out of n, with a two-sided interval. p is nan (and the interval [0, 1]) when n == 0."""

    k: int
    n: int
    p: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def wilson(k: int, n: int, confidence: float = 0.95) -> Proportion:
    """Wilson score interval for k/n (no continuity correction)."""
    _check_counts(k, n)
    z = _z(confidence)
    if n == 0:
        return Proportion(k, n, math.nan, 0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # Exact at the edges: the closed form gives 0 and 1 there, rounding should not say otherwise.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k, n, p, low, high)


def wilson_half_width(k: int, n: int, confidence: float = 0.95) -> float:
    """(high - low) / 2 of the Wilson interval; 0.5 when n == 0."""
    return wilson(k, n, confidence).half_width


@dataclass(frozen=True)
class PairedDiff:
    """P(a) - P(b) on paired outcomes. b: a true & b false; c: a false & b true (the discordant pairs)."""

    n_pairs: int
    b: int
    c: int
    diff: float
    low: float
    high: float
    p_value: float


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: binomial test of b successes in b + c trials at p = 1/2.

    Equals scipy.stats.binomtest(b, b + c, 0.5).pvalue; 1.0 when there is no discordant pair.
    """
    _check_counts(b, b + c)
    m = b + c
    if m == 0:
        return 1.0
    lo = min(b, c)
    if 2 * lo == m:
        return 1.0
    if m <= 2000:
        # Exact: sum the smaller tail with integers, then double (the null distribution is symmetric).
        tail = sum(math.comb(m, i) for i in range(lo + 1))
        return min(1.0, 2 * tail / (1 << m))
    from scipy.stats import binom  # large m: the integer sum gets slow; scipy's cdf is accurate there

    return min(1.0, 2.0 * float(binom.cdf(lo, m, 0.5)))


def _as_bools(values: Sequence[bool], name: str) -> list[bool]:
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError(f"{name}[{i}] is missing")
        out.append(bool(v))
    return out


def paired_difference(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95) -> PairedDiff:
    """Difference of paired proportions P(a) - P(b), Newcombe (1998b) method 10, and McNemar's exact p."""
    xa = _as_bools(a, "a")
    xb = _as_bools(b, "b")
    if len(xa) != len(xb):
        raise ValueError(f"a and b must have the same length, got {len(xa)} and {len(xb)}")
    n = len(xa)
    e = sum(1 for u, v in zip(xa, xb) if u and v)
    f = sum(1 for u, v in zip(xa, xb) if u and not v)
    g = sum(1 for u, v in zip(xa, xb) if v and not u)
    h = n - e - f - g
    return paired_difference_counts(e, f, g, h, confidence)


def paired_difference_counts(e: int, f: int, g: int, h: int, confidence: float = 0.95) -> PairedDiff:
    """As paired_difference() from the 2x2 table of pairs: e both, f a only, g b only, h neither."""
    for name, v in (("e", e), ("f", f), ("g", g), ("h", h)):
        _check_counts(v, v)
    n = e + f + g + h
    p_value = mcnemar_exact(f, g)
    _z(confidence)
    if n == 0:
        return PairedDiff(0, 0, 0, math.nan, -1.0, 1.0, p_value)
    p1 = (e + f) / n
    p2 = (e + g) / n
    diff = p1 - p2
    w1 = wilson(e + f, n, confidence)
    w2 = wilson(e + g, n, confidence)
    l1, u1, l2, u2 = w1.low, w1.high, w2.low, w2.high
    margins = (e + f) * (g + h) * (e + g) * (f + h)
    if margins == 0:
        phi = 0.0
    else:
        # Newcombe's phi with continuity correction: positive association is shrunk by n/2.
        ad_bc = e * h - f * g
        if ad_bc > n / 2.0:
            num = ad_bc - n / 2.0
        elif ad_bc >= 0:
            num = 0.0
        else:
            num = float(ad_bc)
        phi = num / math.sqrt(margins)
    d_low = (p1 - l1) ** 2 - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    d_high = (p2 - l2) ** 2 - 2.0 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2
    low = max(-1.0, diff - math.sqrt(max(0.0, d_low)))
    high = min(1.0, diff + math.sqrt(max(0.0, d_high)))
    return PairedDiff(n, f, g, diff, low, high, p_value)


def _finite(values: Sequence[float]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        x = float(v)
        if not math.isnan(x):
            out.append(x)
    return out


def quantile(values: Sequence[float], q: float) -> float:
    """q-quantile with linear interpolation between order statistics (numpy's default, type 7).

    Missing values (None, nan) are ignored; nan when nothing is left.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    xs = sorted(_finite(values))
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(xs) - 1)
    frac = pos - i
    return xs[i] + (xs[j] - xs[i]) * frac if frac else xs[i]


def survival(values: Sequence[float], thresholds: Sequence[float]) -> list[tuple[float, float]]:
    """Empirical survival curve [(t, P(value > t)) for t in thresholds]; missing values ignored."""
    xs = sorted(_finite(values))
    n = len(xs)
    out = []
    for t in thresholds:
        t = float(t)
        if n == 0:
            out.append((t, math.nan))
            continue
        above = n - bisect.bisect_right(xs, t)
        out.append((t, above / n))
    return out


def adaptive_needs_more(k: int, n: int, target_half_width: float, confidence: float = 0.95) -> bool:
    """True while the Wilson half-width of k/n is above the target (always True at n == 0).

    The caller stops a cell when this is False for every policy, or at the replicate maximum.
    """
    if not target_half_width > 0:
        raise ValueError(f"target_half_width must be > 0, got {target_half_width!r}")
    if n == 0:
        _check_counts(k, n)
        return True
    return wilson_half_width(k, n, confidence) > target_half_width


def adaptive_next_batch(lockups: Sequence[int], n: int, adaptive: Any, confidence: float = 0.95) -> int:
    """How many replicates to add to a cell that has ``n`` complete replicates for every policy.

    ``lockups`` holds the lockup count of each policy of the cell (same n for all: policies get
    their replicates together, so pairs stay complete). ``adaptive`` has ci_half_width, min, max,
    batch (sweeps.spec.model.Adaptive). Rules: reach ``min`` first; then add ``batch`` while any policy's
    Wilson half-width exceeds the target; never exceed ``max``. 0 means the cell is done.
    Note: stopping on the data makes the final interval slightly anti-conservative; ``min`` limits it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    for k in lockups:
        _check_counts(k, n)
    if n >= adaptive.max:
        return 0
    if n < adaptive.min:
        return min(adaptive.min, adaptive.max) - n
    if not lockups or any(adaptive_needs_more(k, n, adaptive.ci_half_width, confidence) for k in lockups):
        return min(adaptive.batch, adaptive.max - n)
    return 0

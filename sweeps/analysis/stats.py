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
    "KaplanMeier",
    "kaplan_meier",
    "wilson_half_width",
    "adaptive_needs_more",
    "adaptive_next_batch",
    "censored_quantile",
    "PairingGain",
    "pairing_gain",
    "adjust_p_values",
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


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan–Meier survival curve S(t) = P(stall > t) with its pointwise 95 % interval.

    `t` are the distinct event times (ascending); `s`, `low`, `high` hold S just after each of
    them (a right-continuous step function, S = 1 before t[0]). `n` values, `censored` of them cut
    off (their stall was still running when observation stopped).
    """

    t: tuple[float, ...]
    s: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int
    censored: int


def kaplan_meier(durations: Sequence[float], censored: Sequence[bool]) -> KaplanMeier:
    """Kaplan–Meier estimate of P(duration > t) with right censoring, by scipy.stats.ecdf.

    A censored duration says "at least this long": it leaves the risk set without an event, so
    the curve does not drop there. Missing durations are ignored. The interval is scipy's
    log-log ("exponential Greenwood") 95 % pointwise interval. With no event at all the curve is
    flat at 1 and has no step.
    """
    import warnings

    import numpy as np
    from scipy import stats as sps

    d = np.asarray(durations, dtype=float)
    c = np.asarray(censored, dtype=bool)
    if d.shape != c.shape:
        raise ValueError(f"{len(d)} durations but {len(c)} censoring flags")
    keep = ~np.isnan(d)
    d, c = d[keep], c[keep]
    if not len(d) or c.all():
        return KaplanMeier((), (), (), (), int(len(d)), int(c.sum()))
    data = sps.CensoredData(uncensored=d[~c], right=d[c])
    sf = sps.ecdf(data).sf
    t = sf.quantiles
    s = sf.evaluate(t)
    with warnings.catch_warnings():  # "undefined at some observations": where S = 0 or 1
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = sf.confidence_interval(0.95, method="log-log")
    low, high = ci.low.evaluate(t), ci.high.evaluate(t)
    low, high = np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)
    return KaplanMeier(tuple(map(float, t)), tuple(map(float, s)), tuple(map(float, low)),
                       tuple(map(float, high)), int(len(d)), int(c.sum()))


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


def adaptive_next_batch(counts: Sequence[tuple[int, int]], scheduled: int, adaptive: Any,
                        confidence: float = 0.95) -> int:
    """How many replicates to add to a cell whose policies have ``scheduled`` replicates each.

    ``counts`` holds each policy's (lockups, ok rows) over those replicates: rows that failed or
    timed out have no outcome, so a policy's ok count may be below ``scheduled``. Policies get
    their replicates together, so pairs stay complete. ``adaptive`` has ci_half_width, min, max,
    batch (sweeps.spec.model.Adaptive). Rules: reach ``min`` first; then add ``batch`` while any
    policy's Wilson half-width exceeds the target; never exceed ``max``. 0 means the cell is done.
    The run's AdaptiveFeeder (sweeps.run.runner) asks this function, so the tested rule is the one
    that runs. Note: stopping on the data makes the final interval slightly anti-conservative;
    ``min`` limits it.
    """
    if isinstance(scheduled, bool) or not isinstance(scheduled, int) or scheduled < 0:
        raise ValueError(f"scheduled must be an int >= 0, got {scheduled!r}")
    for k, n in counts:
        _check_counts(k, n)  # n may exceed `scheduled` on resume: rows stored by a run that went further
    if scheduled >= adaptive.max:
        return 0
    if scheduled < adaptive.min:
        return min(adaptive.min, adaptive.max) - scheduled
    if not counts or any(adaptive_needs_more(k, n, adaptive.ci_half_width, confidence) for k, n in counts):
        return min(adaptive.batch, adaptive.max - scheduled)
    return 0


def censored_quantile(values: Sequence[float], censored: Sequence[bool], q: float) -> float:
    """q-quantile of a duration some of whose values are right-censored (a stall still open when the
    run hit its horizon: the true stall is at least the value). Kaplan-Meier estimate
    (scipy.stats.ecdf on CensoredData): the smallest t with S(t) <= 1 - q.

    math.inf when the estimate never falls that far, i.e. the quantile lies beyond the longest
    observation (the table says "> horizon"); nan with no values. Kept apart from quantile(): with no
    censored value both give the same order statistic for q = 0.5 only up to interpolation, so the
    tables say which one they show.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    pairs = []
    for v, c in zip(values, censored, strict=True):
        if v is None:
            continue
        x = float(v)
        if not math.isnan(x):
            pairs.append((x, bool(c)))
    if not pairs:
        return math.nan
    exact = [x for x, c in pairs if not c]
    right = [x for x, c in pairs if c]
    if not exact:
        return math.inf
    from scipy.stats import CensoredData, ecdf

    sf = ecdf(CensoredData(uncensored=exact, right=right)).sf
    target = 1.0 - q
    for t, s in zip(sf.quantiles, sf.probabilities):
        if s <= target + 1e-12:
            return float(t)
    return math.inf


@dataclass(frozen=True)
class PairingGain:
    """How much common random numbers cut the variance of P(a) - P(b), measured on the pairs.

    var_paired: per-pair variance of the difference of the two outcomes; var_independent: what it
    would be with independent seeds (p_a (1 - p_a) + p_b (1 - p_b)). ratio = var_paired /
    var_independent, with a 95 % interval from a parametric bootstrap of the 2x2 table of pairs;
    1 / ratio is how many times more runs independent seeds would need for the same interval width.
    """

    n_pairs: int
    var_paired: float
    var_independent: float
    ratio: float
    low: float
    high: float


def pairing_gain(e: int, f: int, g: int, h: int, *, resamples: int = 2000, seed: int = 0) -> PairingGain:
    """PairingGain from the 2x2 table of pairs: e both, f a only, g b only, h neither."""
    import numpy as np

    for name, v in (("e", e), ("f", f), ("g", g), ("h", h)):
        _check_counts(v, v)
    n = e + f + g + h
    if n == 0:
        return PairingGain(0, math.nan, math.nan, math.nan, math.nan, math.nan)

    def ratio(t):
        t = np.asarray(t, dtype=float)
        e_, f_, g_ = t[..., 0], t[..., 1], t[..., 2]
        pa, pb = (e_ + f_) / n, (e_ + g_) / n
        vp = (f_ + g_) / n - ((f_ - g_) / n) ** 2
        vi = pa * (1 - pa) + pb * (1 - pb)
        with np.errstate(invalid="ignore", divide="ignore"):
            return vp, vi, vp / vi

    vp, vi, r = (float(x) for x in ratio([e, f, g, h]))
    rng = np.random.Generator(np.random.PCG64(seed))
    boot = rng.multinomial(n, np.array([e, f, g, h], dtype=float) / n, size=resamples)
    rb = ratio(boot)[2]
    rb = rb[np.isfinite(rb)]
    lo, hi = (float(x) for x in np.percentile(rb, [2.5, 97.5])) if rb.size else (math.nan, math.nan)
    return PairingGain(n, vp, vi, r, lo, hi)


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """p-values adjusted for testing many cells at once (statsmodels multipletests):
    "holm" controls the family-wise error rate, "fdr_bh" (Benjamini-Hochberg) the false discovery
    rate. nan stays nan and is left out of the family."""
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    ps = np.asarray([math.nan if v is None else float(v) for v in p_values], dtype=float)
    out = np.full(ps.shape, math.nan)
    ok = ~np.isnan(ps)
    if ok.any():
        out[ok] = multipletests(ps[ok], method=method)[1]
    return [float(v) for v in out]

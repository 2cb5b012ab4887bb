"""sweeps.analysis.stats pinned against published values and cross-checked with scipy."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from sweeps.analysis.stats import (
    PairedDiff,
    Proportion,
    adaptive_needs_more,
    mcnemar_exact,
    paired_difference,
    paired_difference_counts,
    quantile,
    survival,
    kaplan_meier,
    wilson,
)

Z95 = NormalDist().inv_cdf(0.975)


# Newcombe RG (1998) "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Stat Med 17:857-872, Table I, method 3 (score interval without continuity correction).
@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_1998_table(k: int, n: int, low: float, high: float) -> None:
    est = wilson(k, n)
    assert est.p == pytest.approx(k / n)
    assert round(est.low, 4) == low
    assert round(est.high, 4) == high


@pytest.mark.parametrize("n", [1, 2, 5, 20, 29, 263, 10_000])
def test_wilson_edges_are_exact(n: int) -> None:
    """At k = 0 the lower limit is 0 and the upper z^2/(n+z^2); mirrored at k = n (not a point, as Wald)."""
    zero = wilson(0, n)
    assert zero.low == 0.0
    assert zero.high == pytest.approx(Z95**2 / (n + Z95**2), rel=1e-12)
    full = wilson(n, n)
    assert full.high == 1.0
    assert full.low == pytest.approx(n / (n + Z95**2), rel=1e-12)
    assert full.p == 1.0 and zero.p == 0.0


def test_wilson_centre_is_agresti_coull_adjusted_estimate() -> None:
    """Agresti & Coull (1998): the Wilson midpoint is (k + z^2/2) / (n + z^2) ("add two successes
    and two failures" at 95 %)."""
    for k, n in [(0, 10), (3, 10), (7, 12), (50, 100)]:
        est = wilson(k, n)
        assert (est.low + est.high) / 2 == pytest.approx((k + Z95**2 / 2) / (n + Z95**2), rel=1e-12)


def test_wilson_n_zero_is_uninformative() -> None:
    est = wilson(0, 0)
    assert math.isnan(est.p)
    assert (est.low, est.high) == (0.0, 1.0)
    assert est.half_width == 0.5


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_wilson_agrees_with_scipy(confidence: float) -> None:
    for n in (1, 3, 10, 57, 400):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ours = wilson(k, n, confidence)
            ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            assert ours.low == pytest.approx(ref.low, abs=1e-12)
            assert ours.high == pytest.approx(ref.high, abs=1e-12)


@pytest.mark.parametrize("k, n", [(-1, 3), (4, 3), (0, -1)])
def test_wilson_rejects_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson(k, n)


def test_wilson_rejects_bad_confidence_and_types() -> None:
    with pytest.raises(ValueError):
        wilson(1, 2, confidence=1.0)
    with pytest.raises(TypeError):
        wilson(1.0, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wilson(True, 2)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_estimate_and_mirrors(kn: tuple[int, int]) -> None:
    k, n = kn
    est = wilson(k, n)
    if n == 0:
        return
    assert 0.0 <= est.low <= est.p <= est.high <= 1.0
    mirror = wilson(n - k, n)
    assert est.low == pytest.approx(1 - mirror.high, abs=1e-12)
    assert est.high == pytest.approx(1 - mirror.low, abs=1e-12)


# Paired proportions. Fagerland MW, Lydersen S, Laake P (2017) "Statistical Analysis of Contingency
# Tables", ch. 8: complete response before/after consolidation therapy (Cavo et al. 2012),
# table [[59, 6], [16, 80]]; Newcombe square-and-add interval (Newcombe 1998b, method 10):
# estimate -0.0621, 95 % CI -0.1186 to -0.0046 (also the R package contingencytables' test).
def test_paired_difference_matches_published_cavo_example() -> None:
    d = paired_difference_counts(59, 6, 16, 80)
    assert (d.n_pairs, d.b, d.c) == (161, 6, 16)
    assert round(d.diff, 4) == -0.0621
    assert round(d.low, 4) == -0.1186
    assert round(d.high, 4) == -0.0046
    assert d.p_value == pytest.approx(binomtest(6, 22, 0.5).pvalue, rel=1e-12)


def test_paired_difference_from_sequences_counts_discordant_pairs() -> None:
    # Same table as above, as 161 pairs in a scrambled order.
    pairs = [(True, True)] * 59 + [(True, False)] * 6 + [(False, True)] * 16 + [(False, False)] * 80
    rng = np.random.default_rng(3)
    order = rng.permutation(len(pairs))
    a = [pairs[i][0] for i in order]
    b = [pairs[i][1] for i in order]
    d = paired_difference(a, b)
    assert d == paired_difference_counts(59, 6, 16, 80)
    swapped = paired_difference(b, a)
    assert (swapped.b, swapped.c) == (16, 6)
    assert swapped.diff == pytest.approx(-d.diff)
    assert swapped.low == pytest.approx(-d.high)
    assert swapped.high == pytest.approx(-d.low)


def test_paired_difference_phi_correction_matters() -> None:
    """Strongly concordant pairs narrow the interval relative to treating the samples as independent
    (phi > 0); a method-10 bug that dropped phi would give the wider, unpaired interval."""
    d = paired_difference_counts(59, 6, 16, 80)
    p1, p2 = 65 / 161, 75 / 161
    w1, w2 = wilson(65, 161), wilson(75, 161)
    unpaired_low = (p1 - p2) - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2)
    assert d.low > unpaired_low + 0.04


def test_paired_difference_phi_continuity_correction() -> None:
    """Newcombe's phi is shrunk by n/2: for 0 <= AD - BC <= n/2 it is 0 and the interval is the
    unpaired square-and-add one. Bentur et al. 2009 (Fagerland et al. 2017, ch. 8): [[1, 1], [7, 12]],
    AD - BC = 5 <= 21/2."""
    d = paired_difference_counts(1, 1, 7, 12)
    p1, p2 = 2 / 21, 8 / 21
    w1, w2 = wilson(2, 21), wilson(8, 21)
    assert d.low == pytest.approx((p1 - p2) - math.hypot(p1 - w1.low, w2.high - p2), rel=1e-12)
    assert d.high == pytest.approx((p1 - p2) + math.hypot(p2 - w2.low, w1.high - p1), rel=1e-12)
    assert round(d.diff, 4) == -0.2857


def test_paired_difference_degenerate_tables() -> None:
    same = paired_difference([True, False, True], [True, False, True])
    assert (same.diff, same.b, same.c, same.p_value) == (0.0, 0, 0, 1.0)
    assert same.low < 0 < same.high
    empty = paired_difference([], [])
    assert empty.n_pairs == 0 and math.isnan(empty.diff) and (empty.low, empty.high) == (-1.0, 1.0)
    all_a = paired_difference([True] * 10, [False] * 10)
    assert all_a.diff == 1.0 and all_a.high == 1.0 and 0.5 < all_a.low < 1.0
    assert all_a.p_value == pytest.approx(binomtest(10, 10, 0.5).pvalue)


def test_paired_difference_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=4, max_size=4))
def test_paired_interval_contains_estimate(cells: list[int]) -> None:
    e, f, g, h = cells
    d = paired_difference_counts(e, f, g, h)
    if d.n_pairs == 0:
        return
    assert -1.0 <= d.low <= d.diff <= d.high <= 1.0
    assert isinstance(d, PairedDiff)


@pytest.mark.parametrize(
    "b, c", [(0, 0), (0, 1), (1, 0), (6, 16), (10, 10), (3, 30), (144, 256), (900, 1000), (1500, 1600)]
)
def test_mcnemar_exact_equals_scipy_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_exact_known_values() -> None:
    # 0 vs 5 discordant pairs: 2 * (1/2)^5.
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 7) == pytest.approx(2 * 9 / 256)


def test_quantile_matches_numpy_linear() -> None:
    rng = np.random.default_rng(11)
    xs = rng.exponential(2.0, size=101).tolist()
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0):
        assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)), rel=1e-12)
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0], 0.5) == 1.5


def test_quantile_ignores_missing_and_validates_q() -> None:
    assert quantile([1.0, None, float("nan"), 3.0], 0.5) == 2.0  # type: ignore[list-item]
    assert math.isnan(quantile([], 0.5))
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


def test_survival_is_strictly_greater_than() -> None:
    values = [0.0, 1.0, 1.0, 2.0, 5.0]
    assert survival(values, [-1, 0, 1, 1.5, 5, 10]) == [
        (-1.0, 1.0),
        (0.0, 0.8),
        (1.0, 0.4),
        (1.5, 0.4),
        (5.0, 0.0),
        (10.0, 0.0),
    ]
    assert math.isnan(survival([], [1.0])[0][1])


def test_adaptive_needs_more_stops_at_the_wilson_boundary() -> None:
    # k = 0: half-width = z^2 / (n + z^2) / 2 <= 0.02  <=>  n >= z^2 / 0.04 - z^2 = 92.2...
    boundary = math.ceil(Z95**2 / 0.04 - Z95**2)
    assert boundary == 93
    assert adaptive_needs_more(0, boundary - 1, 0.02)
    assert not adaptive_needs_more(0, boundary, 0.02)
    # p = 1/2 needs far more replicates than p = 0 for the same target.
    assert adaptive_needs_more(50, 100, 0.05)
    assert not adaptive_needs_more(0, 100, 0.05)
    assert adaptive_needs_more(0, 0, 0.3)
    with pytest.raises(ValueError):
        adaptive_needs_more(0, 10, 0.0)


def test_proportion_is_frozen() -> None:
    est = wilson(1, 2)
    assert isinstance(est, Proportion)
    with pytest.raises(AttributeError):
        est.k = 3  # type: ignore[misc]


def test_adaptive_next_batch_rules() -> None:
    from sweeps.spec.model import Adaptive
    from sweeps.analysis.stats import adaptive_next_batch

    ad = Adaptive(ci_half_width=0.05, min=30, max=200, batch=40)

    def both(k1: int, k2: int, n: int) -> list[tuple[int, int]]:
        return [(k1, n), (k2, n)]

    assert adaptive_next_batch(both(0, 0, 0), 0, ad) == 30  # reach min first
    assert adaptive_next_batch(both(0, 0, 10), 10, ad) == 20
    # p = 0 at n = 30: half-width z^2/(30+z^2)/2 = 0.057 > 0.05 -> another batch
    assert adaptive_next_batch(both(0, 0, 30), 30, ad) == 40
    assert adaptive_next_batch(both(0, 0, 70), 70, ad) == 0  # 0.026 <= 0.05 for both
    # failed rows have no outcome: a policy with 30 ok rows of 70 is still too wide
    assert adaptive_next_batch([(0, 70), (0, 30)], 70, ad) == 40
    # one policy near 1/2 keeps the whole cell going, in batches, capped at max
    assert adaptive_next_batch(both(0, 35, 70), 70, ad) == 40
    assert adaptive_next_batch(both(0, 90, 190), 190, ad) == 10
    assert adaptive_next_batch(both(0, 100, 200), 200, ad) == 0
    assert adaptive_next_batch([], 30, ad) == 40  # no policy counts yet: keep going
    with pytest.raises(ValueError):
        adaptive_next_batch([(71, 70)], 70, ad)
    # Simulated use: the loop ends, and every policy meets the target or max was reached.
    rng = np.random.default_rng(2)
    for p in (0.0, 0.02, 0.3, 0.5):
        n, ks = 0, [0, 0]
        while (add := adaptive_next_batch([(k, n) for k in ks], n, ad)) > 0:
            draws = rng.random((add, 2)) < [p, p / 2]
            ks = [k + int(x) for k, x in zip(ks, draws.sum(axis=0))]
            n += add
        assert n <= ad.max
        assert n == ad.max or all(wilson(k, n).half_width <= ad.ci_half_width for k in ks)


def test_kaplan_meier_by_hand_with_censoring() -> None:
    # Events at 1, 2, 3, 8; censored at 2 and 5. At risk 6, 5, 3, 1:
    # S(1) = 5/6, S(2) = 5/6·4/5, S(3) = ·2/3, flat through the censored 5, S(8) = 0.
    km = kaplan_meier([1, 2, 2, 3, 5, 8], [False, False, True, False, True, False])
    assert km.n == 6 and km.censored == 2
    s = dict(zip(km.t, km.s))
    assert s[1.0] == pytest.approx(5 / 6) and s[2.0] == pytest.approx(2 / 3)
    assert s[3.0] == pytest.approx(4 / 9) and s[5.0] == pytest.approx(4 / 9) and s[8.0] == 0.0
    assert all(lo <= v <= hi for v, lo, hi in zip(km.s, km.low, km.high))


def test_kaplan_meier_without_censoring_is_the_empirical_survival() -> None:
    xs = [0.1, 0.4, 0.4, 2.0, 7.5]
    km = kaplan_meier(xs, [False] * len(xs))
    assert list(km.s) == pytest.approx([s for _, s in survival(xs, km.t)])


def test_kaplan_meier_all_censored_or_empty_has_no_step() -> None:
    assert kaplan_meier([119.0, 119.5], [True, True]).t == ()
    assert kaplan_meier([math.nan], [False]).n == 0
# ------------------------------------------------------------------ censoring, pairing, multiplicity


def test_censored_quantile_is_kaplan_meier() -> None:
    from sweeps.analysis.stats import censored_quantile

    # no censoring: the KM median is the smallest t with S(t) <= 1/2, an order statistic
    assert censored_quantile([3.0, 1.0, 2.0, 4.0], [False] * 4, 0.5) == 2.0
    # 1, 2, 3 observed; two stalls cut at 5: S = 0.8, 0.6, 0.4 after 1, 2, 3 -> median 3
    assert censored_quantile([1, 2, 3, 5, 5], [0, 0, 0, 1, 1], 0.5) == 3.0
    # censoring before an event moves the estimate: 1 observed, 2 censored, 3 and 4 observed:
    # S(1) = 3/4, S(3) = 3/4 * 1/2 = 3/8 -> median 3 (the naive median of all values is 3 too, the
    # 0.25-quantile separates them: KM says 1, not 2)
    assert censored_quantile([1, 2, 3, 4], [0, 1, 0, 0], 0.25) == 1.0
    assert censored_quantile([1, 2, 3, 4], [0, 1, 0, 0], 0.5) == 3.0
    # more than half cut off: the median is beyond the horizon
    assert censored_quantile([1, 120, 120], [0, 1, 1], 0.5) == math.inf
    assert math.isnan(censored_quantile([], [], 0.5))


def test_pairing_gain_measures_what_shared_seeds_save() -> None:
    import numpy as np

    from sweeps.analysis.stats import pairing_gain

    same = pairing_gain(30, 0, 0, 70)
    assert same.ratio == 0.0 and same.var_independent == pytest.approx(2 * 0.3 * 0.7)
    rng = np.random.default_rng(3)
    a, b = rng.random(4000) < 0.3, rng.random(4000) < 0.2  # independent: no gain
    e, f, g = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    ind = pairing_gain(e, f, g, 4000 - e - f - g)
    assert ind.low <= 1.0 <= ind.high and 0.9 < ind.ratio < 1.1
    # the per-pair variance of the difference is what the paired interval uses
    d = paired_difference_counts(e, f, g, 4000 - e - f - g)
    assert ind.var_paired == pytest.approx(((f + g) / 4000) - d.diff ** 2)


def test_adjust_p_values_holm_and_benjamini_hochberg() -> None:
    from sweeps.analysis.stats import adjust_p_values

    assert adjust_p_values([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert adjust_p_values([0.01, 0.04, 0.03], "fdr_bh") == pytest.approx([0.03, 0.04, 0.04])
    out = adjust_p_values([0.01, None, 0.5], "holm")
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)

"""Dist values: validation, range checks against a field, sampling, canonical dicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oommodel.distributions import (
    Choice,
    Dist,
    LogNormal,
    Uniform,
    dist_from_dict,
    num_from_raw,
    sample,
)


def _rng(seed: int = 1) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def test_from_dict_builds_each_kind() -> None:
    assert dist_from_dict({"uniform": [0, 0.05]}) == Uniform(0.0, 0.05)
    assert dist_from_dict({"lognormal": [1, 1]}) == LogNormal(1.0, 1.0)
    assert dist_from_dict({"choice": [1, 2, 2]}) == Choice((1.0, 2.0, 2.0))
    assert dist_from_dict({"choice": ["idle", "fifo50"]}, strings=True) == Choice(("idle", "fifo50"))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"uniform": [2, 1]}, "low 2 > high 1"),
        ({"uniform": [0]}, "takes [low, high]"),
        ({"uniform": [0, 1, 2]}, "takes [low, high]"),
        ({"uniform": 5}, "takes a list"),
        ({"uniform": [0, "1"]}, "must be a number"),
        ({"uniform": [0, True]}, "must be a number"),
        ({"uniform": [0, float("inf")]}, "must be finite"),
        ({"lognormal": [0, -0.1]}, "sigma must be >= 0"),
        ({"lognormal": [float("nan"), 1]}, "must be finite"),
        ({"choice": []}, "at least one value"),
        ({"choice": [1, None]}, "must be a number"),
        ({"gauss": [0, 1]}, "unknown distribution"),
        ({"unifrom": [0, 1]}, "did you mean 'uniform'"),
        ({}, "exactly one key"),
        ({"uniform": [0, 1], "lognormal": [0, 1]}, "exactly one key"),
    ],
)
def test_invalid_distributions(raw: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        dist_from_dict(raw)
    assert fragment in str(info.value)


def test_string_choice_rules() -> None:
    with pytest.raises(ValueError, match="must be strings"):
        dist_from_dict({"choice": ["idle", 3]}, strings=True)
    with pytest.raises(ValueError, match="unknown distribution"):
        dist_from_dict({"uniform": [0, 1]}, strings=True)
    with pytest.raises(ValueError, match="all numbers or all strings"):
        Choice((1.0, "idle"))


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError):
        Uniform(3.0, 1.0)
    with pytest.raises(ValueError):
        LogNormal(0.0, -1.0)
    with pytest.raises(ValueError):
        Choice(())
    with pytest.raises(TypeError):
        Choice([1.0])  # type: ignore[arg-type]


def test_num_from_raw_checks_the_field_range() -> None:
    assert num_from_raw(3) == 3.0 and isinstance(num_from_raw(3), float)
    assert num_from_raw({"uniform": [0, 2]}, lo=0) == Uniform(0.0, 2.0)
    with pytest.raises(ValueError, match="outside the range: must be >= 0"):
        num_from_raw({"uniform": [-1, 2]}, lo=0)
    # > 0: a uniform that can draw 0 is out, a lognormal (support (0, inf)) is fine
    with pytest.raises(ValueError, match="must be > 0"):
        num_from_raw({"uniform": [0, 1]}, lo=0, lo_open=True)
    assert num_from_raw({"lognormal": [0, 1]}, lo=0, lo_open=True) == LogNormal(0.0, 1.0)
    # an upper bound rules out the unbounded lognormal and too-large choices
    with pytest.raises(ValueError, match="must be in 0..1"):
        num_from_raw({"lognormal": [0, 1]}, lo=0, hi=1)
    with pytest.raises(ValueError, match="must be in 0..1"):
        num_from_raw({"choice": [0.5, 2]}, lo=0, hi=1)
    with pytest.raises(ValueError, match="must be >= 0"):
        num_from_raw(-0.5, lo=0)
    with pytest.raises(ValueError, match="must be a number"):
        num_from_raw("1.0", lo=0)
    with pytest.raises(ValueError, match="must be a number"):
        num_from_raw(False, lo=0)
    # negative zero is normalised so that equal scenarios serialise equally
    assert math.copysign(1.0, num_from_raw(-0.0, lo=0)) == 1.0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "dist",
    [Uniform(0.0, 0.05), LogNormal(1.0, 1.0), Choice((1.0, 2.0)), Choice(("idle", "normal19"))],
)
def test_to_dict_round_trips_and_hashes(dist: Dist) -> None:
    d = dist.to_dict()
    assert len(d) == 1
    strings = isinstance(dist, Choice) and isinstance(dist.values[0], str)
    assert dist_from_dict(d, strings=strings) == dist
    assert hash(dist_from_dict(d, strings=strings)) == hash(dist)


def test_sample_passes_plain_values_through() -> None:
    rng = _rng()
    state = rng.bit_generator.state
    assert sample(2.5, rng) == 2.5
    assert sample("idle", rng) == "idle"
    assert rng.bit_generator.state == state  # no draw consumed


def test_uniform_samples_stay_in_range_and_cover_it() -> None:
    rng = _rng(7)
    u = Uniform(0.0, 0.05)
    xs = [sample(u, rng) for _ in range(2000)]
    assert all(0.0 <= x <= 0.05 for x in xs)
    assert min(xs) < 0.005 and max(xs) > 0.045
    assert abs(np.mean(xs) - 0.025) < 0.002
    assert sample(Uniform(3.0, 3.0), rng) == 3.0
    assert all(type(x) is float for x in xs)


def test_lognormal_matches_numpy_parameterisation() -> None:
    xs = np.array([LogNormal(1.0, 0.5).sample(_rng(s)) for s in range(3000)])
    assert np.all(xs > 0)
    # median of exp(N(mu, sigma)) is e^mu
    assert abs(np.median(xs) - math.e) < 0.1
    assert LogNormal(2.0, 0.0).sample(_rng()) == pytest.approx(math.exp(2.0))


def test_choice_draws_every_value_with_equal_weight() -> None:
    rng = _rng(3)
    c = Choice(("idle", "normal19", "fifo50"))
    draws = [c.sample(rng) for _ in range(3000)]
    counts = {v: draws.count(v) for v in c.values}
    assert set(counts) == set(c.values)
    assert all(800 < n < 1200 for n in counts.values())
    assert Choice((4.0,)).sample(rng) == 4.0


def test_same_generator_state_gives_same_draw() -> None:
    for dist in (Uniform(0, 10), LogNormal(0, 2), Choice((1.0, 2.0, 3.0))):
        assert dist.sample(_rng(11)) == dist.sample(_rng(11))


@pytest.mark.parametrize("dist", [Uniform(0.0, 0.05), Uniform(2.0, 2.0), LogNormal(1.5, 0.7), Choice((1.0, 2.0, 5.0))])
def test_sample_n_equals_repeated_sample(dist) -> None:
    """World draws a group's start times and sizes at once; they must be the one-by-one draws."""
    one = np.random.default_rng(11)
    many = np.random.default_rng(11)
    assert dist.sample_n(many, 64) == [dist.sample(one) for _ in range(64)]

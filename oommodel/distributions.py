"""Distributions for scenario parameters that are not known exactly.

Many costs in the 2018 thread have no published figure (reference section 5.2), so a
scenario may give any numeric parameter as a distribution instead of a number:
``{uniform: [low, high]}``, ``{lognormal: [mu, sigma]}`` (of the underlying normal, as
numpy) or ``{choice: [v1, v2, ...]}``.  A ``Dist`` is a frozen, hashable value; drawing
from it needs an explicit ``numpy.random.Generator`` (see ``oommodel.streams``), never a
global random state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Union

import numpy as np

__all__ = [
    "Dist",
    "Uniform",
    "LogNormal",
    "Choice",
    "sample",
    "dist_from_dict",
    "num_from_raw",
    "check_number",
    "DIST_KINDS",
]

DIST_KINDS: tuple[str, ...] = ("uniform", "lognormal", "choice")


@dataclass(frozen=True, slots=True)
class Dist:
    """Base of the distribution values; subclasses say how to draw one value."""

    def sample(self, rng: np.random.Generator) -> float | str:
        raise NotImplementedError

    def sample_n(self, rng: np.random.Generator, n: int) -> list[float | str]:
        """n draws, the same values as n calls of `sample` on rng (subclasses vectorise)."""
        return [self.sample(rng) for _ in range(n)]

    def to_dict(self) -> dict[str, list]:
        raise NotImplementedError

    def support(self) -> tuple[float, float, bool]:
        """(low, high, low_open): the closed/open interval every draw falls in."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Uniform(Dist):
    """Uniform on [low, high]; low == high is allowed (a constant written as a range)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _finite(self.low, "uniform low")
        _finite(self.high, "uniform high")
        if self.low > self.high:
            raise ValueError(f"uniform low {_fmt(self.low)} > high {_fmt(self.high)}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def sample_n(self, rng: np.random.Generator, n: int) -> list[float]:
        # numpy fills an array with the same per-element draw as the scalar call, in order
        return rng.uniform(self.low, self.high, n).tolist()

    def to_dict(self) -> dict[str, list]:
        return {"uniform": [self.low, self.high]}

    def support(self) -> tuple[float, float, bool]:
        return (self.low, self.high, False)


@dataclass(frozen=True, slots=True)
class LogNormal(Dist):
    """exp(N(mu, sigma)): heavy-tailed, strictly positive (e.g. ``->close()`` cost)."""

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        _finite(self.mu, "lognormal mu")
        _finite(self.sigma, "lognormal sigma")
        if self.sigma < 0:
            raise ValueError(f"lognormal sigma must be >= 0 (got {_fmt(self.sigma)})")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.lognormal(self.mu, self.sigma))

    def sample_n(self, rng: np.random.Generator, n: int) -> list[float]:
        return rng.lognormal(self.mu, self.sigma, n).tolist()

    def to_dict(self) -> dict[str, list]:
        return {"lognormal": [self.mu, self.sigma]}

    def support(self) -> tuple[float, float, bool]:
        return (0.0, math.inf, True)


@dataclass(frozen=True, slots=True)
class Choice(Dist):
    """One of ``values`` with equal probability (repeat a value to weight it)."""

    values: tuple[float | str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple):
            raise TypeError("Choice.values must be a tuple")
        if not self.values:
            raise ValueError("choice needs at least one value")
        kinds = {isinstance(v, str) for v in self.values}
        if len(kinds) > 1:
            raise ValueError("choice values must be all numbers or all strings")

    def sample(self, rng: np.random.Generator) -> float | str:
        return self.values[int(rng.integers(len(self.values)))]

    def to_dict(self) -> dict[str, list]:
        return {"choice": list(self.values)}

    def support(self) -> tuple[float, float, bool]:
        if isinstance(self.values[0], str):
            raise TypeError("a choice of strings has no numeric support")
        return (min(self.values), max(self.values), False)  # type: ignore[type-var]


NumValue = Union[float, Dist]


def sample(value: float | str | Dist, rng: np.random.Generator) -> float | str:
    """Draw from ``value`` if it is a Dist; return plain numbers and strings unchanged."""
    if isinstance(value, Dist):
        return value.sample(rng)
    return value


# --------------------------------------------------------------------------- parsing


def _fmt(x: object) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _finite(x: object, what: str) -> None:
    if isinstance(x, bool) or not isinstance(x, Real):
        raise ValueError(f"{what} must be a number (got {type(x).__name__} {x!r})")
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite (got {x!r})")


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_float_spelling(text: str) -> str:
    """How to write `text` so that YAML 1.1 (PyYAML) reads a float: a '.' in the mantissa and a
    signed exponent ('1e-3' -> '1.0e-3', '1.0e308' -> '1.0e+308')."""
    t = text.strip().replace("_", "")
    mant, sep, exp = t.partition("e") if "e" in t else t.partition("E")
    if not any(ch.isdigit() for ch in mant):  # inf, nan: not written as a number
        return t
    if "." not in mant:
        mant += ".0"
    elif mant.endswith("."):
        mant += "0"
    elif mant.startswith(".") or mant[:1] in "+-" and mant[1:2] == ".":
        mant = mant.replace(".", "0.", 1)
    if sep and exp[:1] not in "+-":
        exp = "+" + exp
    return f"{mant}e{exp}" if sep else mant


def check_number(raw: object, what: str = "") -> float:
    """A finite real number as float; bools and strings are rejected (YAML's 'yes', '1e-3')."""
    pre = f"{what} " if what else ""
    if isinstance(raw, bool) or not isinstance(raw, Real):
        hint = ""
        if isinstance(raw, str) and _parses_as_float(raw):
            hint = f" (quoted? YAML 1.1 also reads {raw} as a string: write {_yaml_float_spelling(raw)})"
        raise ValueError(f"{pre}must be a number, got {type(raw).__name__} {raw!r}{hint}")
    try:
        x = float(raw) + 0.0  # -0.0 -> 0.0, so equal scenarios serialise equally
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise ValueError(f"{pre}must be finite, got {raw!r:.40}")
    return x


def _range_text(lo: float | None, lo_open: bool, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"must be in {_fmt(lo)}..{_fmt(hi)}" if not lo_open else f"must be > {_fmt(lo)} and <= {_fmt(hi)}"
    if lo is not None:
        return f"must be {'>' if lo_open else '>='} {_fmt(lo)}"
    if hi is not None:
        return f"must be <= {_fmt(hi)}"
    return ""


def _in_range(x: float, lo: float | None, lo_open: bool, hi: float | None) -> bool:
    if lo is not None and (x <= lo if lo_open else x < lo):
        return False
    return not (hi is not None and x > hi)


def dist_from_dict(raw: Mapping, *, strings: bool = False) -> Dist:
    """Build a Dist from its one-key mapping; ``strings`` allows a choice of strings only.

    Raises ValueError with a message meant to follow a key path.
    """
    if len(raw) != 1:
        keys = ", ".join(repr(k) for k in raw) or "none"
        raise ValueError(f"a distribution has exactly one key of {'|'.join(DIST_KINDS)} (got {keys})")
    ((kind, args),) = raw.items()
    allowed = ("choice",) if strings else DIST_KINDS
    if kind not in allowed:
        import difflib

        near = difflib.get_close_matches(str(kind), allowed, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ValueError(f"unknown distribution {kind!r}, expected {' | '.join(allowed)}{hint}")
    if not isinstance(args, (list, tuple)):
        raise ValueError(f"{kind} takes a list, got {type(args).__name__}")
    if kind == "choice":
        if not args:
            raise ValueError("choice needs at least one value")
        if strings:
            bad = [v for v in args if not isinstance(v, str)]
            if bad:
                raise ValueError(f"choice values must be strings, got {bad[0]!r}")
            return Choice(tuple(args))
        return Choice(tuple(check_number(v, "choice value") for v in args))
    if len(args) != 2:
        names = "[low, high]" if kind == "uniform" else "[mu, sigma]"
        raise ValueError(f"{kind} takes {names}, got {len(args)} value(s)")
    a = check_number(args[0], kind)
    b = check_number(args[1], kind)
    return Uniform(a, b) if kind == "uniform" else LogNormal(a, b)


def num_from_raw(
    raw: object, *, lo: float | None = None, lo_open: bool = False, hi: float | None = None
) -> float | Dist:
    """Validate a Num field: a number or a Dist whose every draw lies in the field's range."""
    if isinstance(raw, Mapping):
        d = dist_from_dict(raw)
        s_lo, s_hi, s_open = d.support()
        ok_lo = lo is None or (s_lo > lo if lo_open and not s_open else s_lo >= lo)
        ok_hi = hi is None or s_hi <= hi
        if not (ok_lo and ok_hi):
            kind = next(iter(raw))
            raise ValueError(
                f"{kind} {d.to_dict()[kind]} can draw values outside the range: "
                f"{_range_text(lo, lo_open, hi)}"
            )
        return d
    if isinstance(raw, Dist):  # already built (e.g. a default)
        return num_from_raw(raw.to_dict(), lo=lo, lo_open=lo_open, hi=hi)
    x = check_number(raw)
    if not _in_range(x, lo, lo_open, hi):
        raise ValueError(f"{_range_text(lo, lo_open, hi)} (got {_fmt(raw)})")
    return x


def range_text(lo: float | None, lo_open: bool = False, hi: float | None = None) -> str:
    """The canonical 'must be ...' phrase used in error messages."""
    return _range_text(lo, lo_open, hi)


def in_range(x: float, lo: float | None, lo_open: bool = False, hi: float | None = None) -> bool:
    return _in_range(x, lo, lo_open, hi)


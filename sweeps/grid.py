"""Grid expansion: from a validated SweepSpec to the cells of the sweep (pure).

Key paths look like ``machine.cpus`` or ``groups[0].sched.rt_priority``. A path must already exist in
the canonical base scenario (defaults filled), so a misspelt key is an error, not a silent no-op.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from sweeps.identity import cell_id as _cell_id

if TYPE_CHECKING:
    from sweeps.spec import SampleSpec, SweepSpec

__all__ = [
    "Cell",
    "parse_path",
    "format_path",
    "key_paths",
    "closest_key",
    "get_path",
    "set_path",
    "apply_params",
    "axes",
    "SAMPLE_METHODS",
    "sample_design",
    "sample_points",
    "expand_cells",
    "count_cells",
    "canonical_scenario",
]

_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|(\.)")


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its position, identity, the values of the varied keys, the full scenario."""

    index: int
    cell_id: str
    params: dict[str, object]
    scenario: dict


def _error(path: str, message: str) -> Exception:
    from sweeps.spec import SweepError

    return SweepError(path, message)


def parse_path(key: str) -> tuple[str | int, ...]:
    """"groups[0].sched.nice" -> ("groups", 0, "sched", "nice"); SweepError on bad syntax."""
    if not isinstance(key, str) or not key:
        raise _error(str(key), "key path must be a non-empty string")
    parts: list[str | int] = []
    pos = 0
    expect_name = True
    while pos < len(key):
        m = _TOKEN.match(key, pos)
        if m is None:
            raise _error(key, f"bad key path syntax at character {pos + 1} ({key[pos]!r})")
        name, index, dot = m.groups()
        if name is not None:
            if not expect_name:
                raise _error(key, f"bad key path syntax at character {pos + 1} (missing '.')")
            parts.append(name)
            expect_name = False
        elif index is not None:
            if expect_name:
                raise _error(key, f"bad key path syntax at character {pos + 1} (index without a key)")
            parts.append(int(index))
        else:
            if expect_name:
                raise _error(key, f"bad key path syntax at character {pos + 1} (empty key)")
            expect_name = True
        pos = m.end()
    if expect_name:
        raise _error(key, "bad key path syntax (ends with '.')")
    return tuple(parts)


def format_path(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out


def key_paths(d: Any, prefix: tuple[str | int, ...] = ()) -> list[str]:
    """Every key path of a nested dict/list, inner nodes included (a grid may vary a whole sub-dict)."""
    out: list[str] = []
    if isinstance(d, dict):
        for k, v in d.items():
            p = prefix + (str(k),)
            out.append(format_path(p))
            out.extend(key_paths(v, p))
    elif isinstance(d, list) and prefix:
        for i, v in enumerate(d):
            p = prefix + (i,)
            out.append(format_path(p))
            out.extend(key_paths(v, p))
    return out


def closest_key(d: dict, key: str) -> str | None:
    """The existing key path closest to ``key`` (difflib), or None."""
    matches = difflib.get_close_matches(key, key_paths(d), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _missing(d: dict, key: str, prefix: str, what: str) -> Exception:
    hint = closest_key(d, key)
    suffix = f" (did you mean '{hint}'?)" if hint else ""
    return _error(prefix + key, f"{what}{suffix}")


def _walk(d: Any, parts: tuple[str | int, ...], key: str, prefix: str) -> Any:
    node = d
    for p in parts:
        if isinstance(p, int):
            if not isinstance(node, list) or p >= len(node):
                raise _missing(d, key, prefix, "no such scenario key")
            node = node[p]
        else:
            if not isinstance(node, dict) or p not in node:
                raise _missing(d, key, prefix, "no such scenario key")
            node = node[p]
    return node


def get_path(d: dict, key: str, *, prefix: str = "") -> Any:
    """Value at a key path; SweepError naming the key (and the closest existing key) if absent.

    ``prefix`` is prepended to the path in errors (e.g. "grid.").
    """
    return _walk(d, parse_path(key), key, prefix)


def set_path(d: dict, key: str, value: Any, *, prefix: str = "") -> dict:
    """A deep copy of ``d`` with ``value`` at ``key``; the key must exist already (SweepError if not)."""
    parts = parse_path(key)
    out = copy.deepcopy(d)
    parent = _walk(out, parts[:-1], key, prefix)
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(parent, list) or last >= len(parent):
            raise _missing(d, key, prefix, "no such scenario key")
    elif not isinstance(parent, dict) or last not in parent:
        raise _missing(d, key, prefix, "no such scenario key")
    parent[last] = copy.deepcopy(value)
    return out


def apply_params(base: dict, params: dict[str, Any], *, prefix: str = "grid.") -> dict:
    """A copy of ``base`` with every (key path -> value) of ``params`` set; one copy, not one per key."""
    out = copy.deepcopy(base)
    for key, value in params.items():
        parts = parse_path(key)
        parent = _walk(out, parts[:-1], key, prefix)
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(parent, list) or last >= len(parent):
                raise _missing(out, key, prefix, "no such scenario key")
        elif not isinstance(parent, dict) or last not in parent:
            raise _missing(out, key, prefix, "no such scenario key")
        parent[last] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
    return out


def axes(spec: "SweepSpec") -> list[list[tuple[tuple[str, Any], ...]]]:
    """The grid axes in file order; a zip group is one axis placed at its first key.

    Each axis is a list of points; a point is a tuple of (key, value) pairs.
    """
    zipped = {k: group for group in spec.zip for k in group}
    out: list[list[tuple[tuple[str, Any], ...]]] = []
    done: set[str] = set()
    for key, values in spec.grid.items():
        if key in done:
            continue
        group = zipped.get(key)
        if group is None:
            out.append([((key, v),) for v in values])
            done.add(key)
        else:
            cols = [spec.grid[k] for k in group]
            out.append([tuple(zip(group, row)) for row in zip(*cols)])
            done.update(group)
    return out


SAMPLE_METHODS = ("lhs", "random", "sobol", "saltelli")


def _unit_design(sample: "SampleSpec") -> "Any":
    """The design in the unit cube, one column per parameter, in the order of sample.params."""
    import numpy as np

    d = len(sample.params)
    n = sample.n
    if sample.method == "saltelli":
        from SALib.sample import sobol as salib_sobol

        problem = {"num_vars": d, "names": list(sample.params), "bounds": [[0.0, 1.0]] * d}
        # N (D + 2) points: A, B and the D matrices A with column i from B (Saltelli 2010); no
        # second-order indices. Scrambled Sobol' sequence, seeded.
        return salib_sobol.sample(problem, n, calc_second_order=False, scramble=True, seed=sample.seed)
    if sample.method == "sobol":
        from scipy.stats import qmc

        return qmc.Sobol(d, scramble=True, seed=sample.seed).random(n)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(sample.seed)))
    unit = np.empty((n, d))
    for j in range(d):
        if sample.method == "lhs":
            unit[:, j] = (rng.permutation(n) + rng.random(n)) / n
        else:
            unit[:, j] = rng.random(n)
    return unit


def _from_unit(key: str, rng: dict, u: float) -> Any:
    (kind, arg), = rng.items()
    if kind == "choice":
        return copy.deepcopy(arg[min(len(arg) - 1, int(math.floor(u * len(arg))))])
    lo, hi = arg
    if kind == "uniform":
        return float(lo + u * (hi - lo))
    if kind == "loguniform":
        return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    if kind == "int":
        return int(min(hi, lo + math.floor(u * (hi - lo + 1))))
    raise _error(f"sample.params.{key}", f"unknown range kind {kind!r}")  # parse_sweep rejects it first


def sample_design(sample: "SampleSpec | None") -> list[dict[str, Any]]:
    """Every point of the sample design, in design order, repeats included.

    lhs: one value in each of n equal strata per parameter, strata paired at random (McKay 1979);
    random: independent uniform draws; sobol: n points of a scrambled Sobol' sequence (scipy.stats.qmc;
    n a power of 2); saltelli: the n (D + 2) points of Saltelli's design for first-order and total
    Sobol indices (SALib). Ranges: uniform [lo, hi], loguniform [lo, hi] (lo > 0), int [lo, hi]
    (inclusive), choice [v1, v2, ...] (a category: the unit interval cut into equal parts).
    With choice or int keys, a design can name one point twice (a Saltelli matrix that takes a
    column from B where B has the same category as A): see sample_points().
    """
    if sample is None or sample.n == 0 or not sample.params:
        return []
    unit = _unit_design(sample)
    keys = list(sample.params)
    return [
        {key: _from_unit(key, sample.params[key], float(unit[i, j])) for j, key in enumerate(keys)}
        for i in range(unit.shape[0])
    ]


def sample_points(sample: "SampleSpec | None") -> list[dict[str, Any]]:
    """The distinct points of the sample design, in order of first appearance (deterministic in
    the seed). Each becomes one cell per grid point: a point named twice by the design is one
    scenario, so one cell_id, run once; analyses that need the design (Sobol indices) map the design
    back to its points with sample_design()."""
    seen: set[str] = set()
    out = []
    for point in sample_design(sample):
        text = json.dumps(point, sort_keys=True, default=str)
        if text not in seen:
            seen.add(text)
            out.append(point)
    return out


def canonical_scenario(d: dict) -> dict:
    """oommodel's canonical form (defaults filled, numbers normalised): what the cell id hashes."""
    from oommodel import Scenario

    return Scenario.from_dict(d).to_dict()


def _points(spec: "SweepSpec") -> Iterator[dict[str, Any]]:
    samples = sample_points(spec.sample) or [{}]
    for combo in itertools.product(*axes(spec)):
        params: dict[str, Any] = {}
        for point in combo:
            params.update(point)
        for s in samples:
            yield {**params, **s}


def expand_cells(
    spec: "SweepSpec",
    model_version: str,
    *,
    canonicalize: Callable[[dict], dict] | None = None,
) -> Iterator[Cell]:
    """The cells of a sweep in a deterministic order: the cartesian product of the grid axes (first
    key slowest), each crossed with every sample point.

    ``canonicalize`` maps a scenario dict to its canonical form (default: oommodel's
    Scenario.from_dict(d).to_dict(); it raises ScenarioError for an invalid cell).
    """
    canon = canonicalize or canonical_scenario
    for index, params in enumerate(_points(spec)):
        scenario = canon(apply_params(spec.base, params))
        yield Cell(index, _cell_id(scenario, model_version), params, scenario)


def count_cells(spec: "SweepSpec") -> int:
    """Number of cells expand_cells() yields, without expanding them."""
    n = math.prod(len(axis) for axis in axes(spec))
    if spec.sample is not None and spec.sample.n > 0 and spec.sample.params:
        if spec.sample.method in ("lhs", "random") and not any(
            "choice" in r or "int" in r for r in spec.sample.params.values()
        ):
            n *= spec.sample.n  # continuous draws: no two points alike
        else:
            n *= len(sample_points(spec.sample))
    return n

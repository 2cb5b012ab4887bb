"""Grid expansion: from a validated SweepSpec to the cells of the sweep (pure).

The grid's keys are key paths (`sweeps.spec.keypath`) into the canonical base scenario; a cell is
the base with one point's values applied, identified by `sweeps.spec.identity.cell_id`.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from sweeps.errors import SweepError
from sweeps.spec.identity import cell_id
from sweeps.spec.keypath import apply_params
from sweeps.spec.model import SampleSpec, SweepSpec

__all__ = [
    "Cell",
    "axes",
    "SAMPLE_METHODS",
    "sample_design",
    "sample_points",
    "grid_points",
    "expand_cells",
    "count_cells",
    "canonical_scenario",
]


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its position, identity, the values of the varied keys, the full scenario."""

    index: int
    cell_id: str
    params: dict[str, object]
    scenario: dict


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
    raise SweepError(f"sample.params.{key}", f"unknown range kind {kind!r}")  # parse_sweep rejects it first


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


def grid_points(spec: "SweepSpec") -> Iterator[dict[str, Any]]:
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
    for index, params in enumerate(grid_points(spec)):
        scenario = canon(apply_params(spec.base, params))
        yield Cell(index, cell_id(scenario, model_version), params, scenario)


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

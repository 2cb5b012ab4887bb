"""Grid expansion: from a validated SweepSpec to the cells of the sweep (pure).

The grid's keys are key paths (`sweeps.spec.keypath`) into the canonical base scenario; a cell is
the base with one point's values applied, identified by `sweeps.spec.identity.cell_id`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from sweeps.spec.identity import cell_id
from sweeps.spec.keypath import apply_params
from sweeps.spec.model import SampleSpec, SweepSpec

__all__ = [
    "Cell",
    "axes",
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


def sample_points(sample: "SampleSpec | None") -> list[dict[str, Any]]:
    """The sample points of a SampleSpec, deterministic in its seed.

    lhs: one value in each of n equal strata per parameter, strata paired at random (McKay 1979);
    random: independent uniform draws. Ranges: uniform [lo, hi], loguniform [lo, hi] (lo > 0),
    int [lo, hi] (inclusive).
    """
    if sample is None or sample.n == 0 or not sample.params:
        return []
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(sample.seed)))
    n = sample.n
    keys = list(sample.params)
    unit = np.empty((n, len(keys)))
    for j in range(len(keys)):
        if sample.method == "lhs":
            unit[:, j] = (rng.permutation(n) + rng.random(n)) / n
        else:
            unit[:, j] = rng.random(n)
    points: list[dict[str, Any]] = []
    for i in range(n):
        point: dict[str, Any] = {}
        for j, key in enumerate(keys):
            (kind, (lo, hi)), = sample.params[key].items()
            u = float(unit[i, j])
            if kind == "uniform":
                point[key] = float(lo + u * (hi - lo))
            elif kind == "loguniform":
                point[key] = float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
            elif kind == "int":
                point[key] = int(min(hi, lo + math.floor(u * (hi - lo + 1))))
            else:  # parse_sweep rejects other kinds; keep the function total for hand-built specs
                raise _error(f"sample.params.{key}", f"unknown range kind {kind!r}")
        points.append(point)
    return points


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
        n *= spec.sample.n
    return n

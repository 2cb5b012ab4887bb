"""Grid expansion: key paths, order, zip groups, sample points, identities."""

from __future__ import annotations

import itertools
import math

import pytest

from sweeps.spec.grid import Cell, count_cells, expand_cells, sample_points
from sweeps.spec.keypath import get_path, key_paths, parse_path, format_path, set_path
from sweeps.spec.identity import cell_id
from sweeps.spec.model import MlflowSpec, PolicyChoice, SampleSpec, SweepSpec
from sweeps.errors import SweepError

BASE = {
    "machine": {"cpus": 8, "hz": 1000},
    "groups": [
        {"name": "children", "sched": {"policy": "fifo", "rt_priority": 99}, "cpus": None},
        {"name": "hog", "sched": {"policy": "normal", "nice": 0}, "cpus": [0, 1]},
    ],
    "victim": {"sched_at_handover": "unchanged"},
    "oom": None,
}


def identity(d: dict) -> dict:
    return d


def make_spec(grid: dict, zip_: tuple = (), sample: SampleSpec | None = None, base: dict = BASE) -> SweepSpec:
    return SweepSpec(
        name="t",
        base=base,
        grid={k: tuple(v) for k, v in grid.items()},
        zip=tuple(tuple(g) for g in zip_),
        sample=sample,
        policies=(PolicyChoice("upstream_4_19"),),
        replicates=2,
        seed=1,
        output="results/",
        mlflow=MlflowSpec("t"),
    )


def cells(spec: SweepSpec) -> list[Cell]:
    return list(expand_cells(spec, "0.1.0", canonicalize=identity))


# ---------------------------------------------------------------- key paths


def test_parse_and_format_path_round_trip() -> None:
    assert parse_path("groups[0].sched.rt_priority") == ("groups", 0, "sched", "rt_priority")
    assert parse_path("groups[1].cpus[0]") == ("groups", 1, "cpus", 0)
    for key in ("machine.cpus", "groups[0].sched.nice", "oom", "groups[10].cpus[2]"):
        assert format_path(parse_path(key)) == key


@pytest.mark.parametrize("bad", ["", "machine..cpus", ".cpus", "machine.", "[0]", "groups[x]", "a b", "groups[0]sched"])
def test_parse_path_rejects_bad_syntax(bad: str) -> None:
    with pytest.raises(SweepError) as e:
        parse_path(bad)
    assert str(e.value).startswith(bad + ":") or bad == ""


def test_get_path_and_closest_key() -> None:
    assert get_path(BASE, "groups[0].sched.rt_priority") == 99
    assert get_path(BASE, "groups[1].cpus[1]") == 1
    assert get_path(BASE, "oom") is None
    with pytest.raises(SweepError) as e:
        get_path(BASE, "victim.sched_at_handovr", prefix="grid.")
    assert e.value.path == "grid.victim.sched_at_handovr"
    assert str(e.value) == (
        "grid.victim.sched_at_handovr: no such scenario key (did you mean 'victim.sched_at_handover'?)"
    )
    with pytest.raises(SweepError, match=r"groups\[2\]\.sched\.nice: no such scenario key"):
        get_path(BASE, "groups[2].sched.nice")
    with pytest.raises(SweepError, match="no such scenario key"):
        get_path(BASE, "oom.limit_mb")  # oom is null in the base: nothing below it


def test_set_path_copies_and_refuses_new_keys() -> None:
    out = set_path(BASE, "groups[0].sched.rt_priority", 1)
    assert out["groups"][0]["sched"]["rt_priority"] == 1
    assert BASE["groups"][0]["sched"]["rt_priority"] == 99  # original untouched
    value = [0]
    out = set_path(BASE, "groups[0].cpus", value)
    value.append(5)
    assert out["groups"][0]["cpus"] == [0]  # the value is copied too
    with pytest.raises(SweepError, match=r"did you mean 'groups\[1\]\.sched\.nice'"):
        set_path(BASE, "groups[1].sched.nise", 3)
    with pytest.raises(SweepError):
        set_path(BASE, "groups[0].sched.nice", 3)  # exists only for CFS policies: not in this base


def test_key_paths_lists_inner_nodes_and_indices() -> None:
    paths = key_paths(BASE)
    for p in ("machine", "machine.cpus", "groups", "groups[0]", "groups[1].cpus[1]", "victim.sched_at_handover"):
        assert p in paths


# ---------------------------------------------------------------- expansion


def test_cartesian_product_first_key_slowest() -> None:
    spec = make_spec({"victim.sched_at_handover": ["unchanged", "idle"], "machine.cpus": [1, 2, 4]})
    got = [(c.params["victim.sched_at_handover"], c.params["machine.cpus"]) for c in cells(spec)]
    assert got == list(itertools.product(["unchanged", "idle"], [1, 2, 4]))
    assert count_cells(spec) == 6
    out = cells(spec)
    assert [c.index for c in out] == list(range(6))
    assert out[4].scenario["machine"]["cpus"] == 2 and out[4].scenario["victim"]["sched_at_handover"] == "idle"
    assert out[4].cell_id == cell_id(out[4].scenario, "0.1.0")
    assert len({c.cell_id for c in out}) == 6


def test_zip_group_is_one_axis_at_its_first_key() -> None:
    spec = make_spec(
        {
            "groups[0].sched.rt_priority": [1, 50, 99],
            "victim.sched_at_handover": ["unchanged", "idle"],
            "machine.cpus": [1, 2, 4],
        },
        zip_=[["groups[0].sched.rt_priority", "machine.cpus"]],
    )
    got = [
        (c.params["groups[0].sched.rt_priority"], c.params["machine.cpus"], c.params["victim.sched_at_handover"])
        for c in cells(spec)
    ]
    assert got == [
        (1, 1, "unchanged"), (1, 1, "idle"),
        (50, 2, "unchanged"), (50, 2, "idle"),
        (99, 4, "unchanged"), (99, 4, "idle"),
    ]
    assert count_cells(spec) == 6


def test_empty_grid_is_one_cell_the_base() -> None:
    spec = make_spec({})
    out = cells(spec)
    assert count_cells(spec) == 1 and len(out) == 1
    assert out[0].params == {} and out[0].scenario == BASE


def test_cell_id_is_content_not_position() -> None:
    """Adding a grid value or reordering keys keeps the ids of existing cells (resume finds them)."""
    small = {c.cell_id: c.params for c in cells(make_spec({"machine.cpus": [1, 2], "machine.hz": [100, 1000]}))}
    big = {
        c.cell_id: c.params
        for c in cells(make_spec({"machine.hz": [100, 250, 1000], "machine.cpus": [4, 2, 1]}))
    }
    assert set(small) < set(big)
    for cid, params in small.items():
        assert big[cid] == params


def test_expansion_uses_canonicalize_and_is_repeatable() -> None:
    calls = []

    def canon(d: dict) -> dict:
        calls.append(d)
        return {**d, "canonical": True}

    spec = make_spec({"machine.cpus": [1, 2]})
    out = list(expand_cells(spec, "0.1.0", canonicalize=canon))
    assert len(calls) == 2 and all(c.scenario["canonical"] for c in out)
    again = list(expand_cells(spec, "0.1.0", canonicalize=canon))
    assert [c.cell_id for c in again] == [c.cell_id for c in out]
    other_version = list(expand_cells(spec, "0.2.0", canonicalize=canon))
    assert not {c.cell_id for c in other_version} & {c.cell_id for c in out}


# ---------------------------------------------------------------- sampling


def test_lhs_points_hit_every_stratum_once() -> None:
    n = 20
    sample = SampleSpec(
        method="lhs",
        n=n,
        seed=4,
        params={"machine.cpus": {"int": [1, 20]}, "groups[1].sched.nice": {"uniform": [-20.0, 19.0]}},
    )
    pts = sample_points(sample)
    assert len(pts) == n
    assert sorted(p["machine.cpus"] for p in pts) == list(range(1, 21))
    strata = sorted(math.floor((p["groups[1].sched.nice"] + 20.0) / 39.0 * n) for p in pts)
    assert strata == list(range(n))
    assert sample_points(sample) == pts  # deterministic in the seed
    other = SampleSpec("lhs", n, 5, sample.params)
    assert sample_points(other) != pts


def test_random_and_loguniform_points_stay_in_range() -> None:
    sample = SampleSpec("random", 200, 9, {"machine.hz": {"loguniform": [0.01, 100.0]}, "machine.cpus": {"int": [2, 3]}})
    pts = sample_points(sample)
    hz = [p["machine.hz"] for p in pts]
    assert all(0.01 <= x <= 100.0 for x in hz)
    # log-uniform: about half the mass below the geometric midpoint 1.0
    assert 70 < sum(x < 1.0 for x in hz) < 130
    assert {p["machine.cpus"] for p in pts} == {2, 3}
    assert all(isinstance(p["machine.cpus"], int) for p in pts)


def test_sample_points_cross_the_grid() -> None:
    sample = SampleSpec("lhs", 3, 1, {"machine.hz": {"uniform": [100.0, 1000.0]}})
    spec = make_spec({"machine.cpus": [1, 2]}, sample=sample)
    out = cells(spec)
    assert count_cells(spec) == 6 and len(out) == 6
    hz_first = [c.params["machine.hz"] for c in out[:3]]
    assert [c.params["machine.hz"] for c in out[3:]] == hz_first
    assert [c.params["machine.cpus"] for c in out] == [1, 1, 1, 2, 2, 2]
    assert out[0].scenario["machine"]["hz"] == hz_first[0]


def test_zero_sample_points_means_no_sampling() -> None:
    spec = make_spec({"machine.cpus": [1, 2]}, sample=SampleSpec("lhs", 0, 1, {}))
    assert count_cells(spec) == 2 and len(cells(spec)) == 2

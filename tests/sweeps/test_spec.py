"""Sweep file validation: every error names its key path, before any work starts."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from oommodel import POLICIES, Scenario
from sweeps.spec.grid import count_cells, expand_cells
from sweeps.spec.model import Adaptive, PolicyChoice, SampleSpec, SweepSpec
from sweeps.errors import SweepError
from sweeps.spec.parse import load_sweep, parse_sweep


SCENARIO = {
    "machine": {"cpus": 4},
    "oom": {"domain": "memcg", "limit_mb": 100},
    "groups": [
        {"name": "children", "count": 8, "role": "allocator", "sched": {"policy": "fifo", "rt_priority": 99}, "cpus": [0]},
        {"name": "hog", "count": 1, "role": "hog", "sched": {"policy": "normal", "nice": 0}},
    ],
}

SWEEP = {
    "name": "handoff-vs-priority",
    "base": SCENARIO,
    "grid": {
        "victim.sched_at_handover": ["unchanged", "idle"],
        "machine.rt_runtime_share": [True, False],
        "groups[0].sched.rt_priority": [1, 50, 99],
    },
    "policies": ["upstream_4_19", {"timeout_backoff": {"timeout_s": 4}}],
    "replicates": 20,
    "seed": 20181116,
    "output": "results/",
}


def parse(data: dict, base_dir: Path = Path("."), **kw: Any) -> SweepSpec:
    """The real parser with the real policy registry (oommodel.POLICIES)."""
    return parse_sweep(data, base_dir, **kw)


def with_(**changes: Any) -> dict:
    out = dict(SWEEP)
    for k, v in changes.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- good files


def test_valid_sweep_is_frozen_and_canonical() -> None:
    spec = parse(SWEEP)
    assert spec.name == "handoff-vs-priority"
    assert spec.base == Scenario.from_dict(SCENARIO).to_dict()  # defaults filled
    assert list(spec.grid) == list(SWEEP["grid"])  # file order kept
    assert spec.grid["groups[0].sched.rt_priority"] == (1, 50, 99)
    assert spec.policies == (PolicyChoice("upstream_4_19"), PolicyChoice("timeout_backoff", (("timeout_s", 4.0),)))
    assert [p.label for p in spec.policies] == ["upstream_4_19", "timeout_backoff[timeout_s=4.0]"]
    assert spec.replicates == 20 and spec.seed == 20181116
    assert spec.mlflow.experiment == "handoff-vs-priority" and spec.mlflow.max_cell_runs == 2000
    assert spec.sample is None and spec.zip == ()
    assert len(spec.sweep_hash) == 64
    assert count_cells(spec) == 12
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]


def test_cells_of_a_real_scenario_are_canonical() -> None:
    spec = parse(SWEEP)
    out = list(expand_cells(spec, "0.1.0"))
    assert len(out) == 12
    for cell in out:
        assert Scenario.from_dict(cell.scenario).to_dict() == cell.scenario
        assert cell.scenario["groups"][0]["sched"]["rt_priority"] == cell.params["groups[0].sched.rt_priority"]
    assert len({c.cell_id for c in out}) == 12


def test_policy_label_sorts_options() -> None:
    # no policy of the model has two options yet: the label's order is the PolicyChoice's own
    choice = PolicyChoice("timeout_backoff", (("timeout_s", 2.0), ("backoff", 3.0)))
    assert choice.label == "timeout_backoff[backoff=3.0,timeout_s=2.0]"
    spec = parse(with_(policies=[{"timeout_backoff": {"timeout_s": 2}}, {"handoff_rfc_v2": {"skip_after": "close"}}]))
    assert [p.label for p in spec.policies] == ["timeout_backoff[timeout_s=2.0]", "handoff_rfc_v2[skip_after=close]"]


def test_policies_all_and_bare_names() -> None:
    assert [p.name for p in parse(with_(policies="all")).policies] == list(POLICIES)
    assert parse(with_(policies=[{"upstream_6_1": None}])).policies == (PolicyChoice("upstream_6_1"),)


def test_adaptive_replicates_both_forms() -> None:
    a = parse(with_(replicates={"adaptive": {"ci_half_width": 0.02, "min": 30, "max": 2000, "batch": 30}}))
    b = parse(with_(replicates={"ci_half_width": 0.02}))
    assert a.replicates == b.replicates == Adaptive(0.02, 30, 2000, 30)
    assert a.max_replicates == 2000 and a.adaptive is not None


def test_sample_with_zero_points_is_off_and_seed_defaults_to_sweep_seed() -> None:
    assert parse(with_(sample={"method": "lhs", "n": 0, "seed": 1, "params": {}})).sample is None
    spec = parse(with_(sample={"method": "random", "n": 4, "params": {"costs.exit_ms": {"uniform": [0.01, 1.0]}}}))
    assert spec.sample == SampleSpec("random", 4, 20181116, {"costs.exit_ms": {"uniform": [0.01, 1.0]}})
    assert count_cells(spec) == 48
    assert spec.varied_keys[-1] == "costs.exit_ms"


def test_load_sweep_resolves_base_against_the_sweep_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "scenarios" / "s.yaml").write_text(yaml.safe_dump(SCENARIO))
    text = yaml.safe_dump({**SWEEP, "base": "../scenarios/s.yaml"}, sort_keys=False)
    sweep_file = tmp_path / "sweeps" / "sw.yaml"
    sweep_file.write_text(text)
    monkeypatch.chdir("/")
    spec = load_sweep(sweep_file)
    assert spec.source_text == text
    assert spec.base == parse(SWEEP).base
    # Same content inline or from a file: same sweep identity.
    assert spec.sweep_hash == parse(SWEEP).sweep_hash


def test_sweep_hash_ignores_output_and_formatting_but_not_content() -> None:
    h = parse(SWEEP).sweep_hash
    assert parse(with_(output="elsewhere/")).sweep_hash == h
    reordered = dict(reversed(list(SWEEP.items())))
    assert parse(reordered).sweep_hash == h
    assert parse(with_(seed=1)).sweep_hash != h
    assert parse(with_(grid={**SWEEP["grid"], "machine.cpus": [4, 8]})).sweep_hash != h
    assert parse(with_(policies=["upstream_4_19"])).sweep_hash != h


# ---------------------------------------------------------------- bad files (table)

BAD: list[tuple[str, dict, str, str]] = [
    ("unknown top key", with_(polices=["upstream_4_19"]), "polices", "did you mean 'policies'"),
    ("missing policies", with_(policies=...), "policies", "required"),
    ("missing name", with_(name=...), "name", "required"),
    ("grid typo", with_(grid={"victim.sched_at_handovr": ["idle"]}), "grid.victim.sched_at_handovr",
     "did you mean 'victim.sched_at_handover'"),
    ("grid key absent for policy", with_(grid={"groups[0].sched.nice": [0, 5]}), "grid.groups[0].sched.nice",
     "no such scenario key"),
    ("grid index out of range", with_(grid={"groups[2].count": [1]}), "grid.groups[2].count", "no such scenario key"),
    ("grid bad syntax", with_(grid={"machine..cpus": [1]}), "grid.machine..cpus", "syntax"),
    ("grid not a list", with_(grid={"machine.cpus": 4}), "grid.machine.cpus", "must be a list"),
    ("grid empty list", with_(grid={"machine.cpus": []}), "grid.machine.cpus", "empty"),
    ("grid duplicate", with_(grid={"machine.cpus": [2, 4, 2]}), "grid.machine.cpus[2]", "duplicate"),
    ("grid overlap", with_(grid={"machine": [{"cpus": 2}], "machine.cpus": [2]}), "grid.machine.cpus", "overlaps"),
    ("bad cell", with_(grid={"groups[0].sched.rt_priority": [50, 0]}), "grid.groups[0].sched.rt_priority",
     "groups[0].sched.rt_priority=0"),
    ("bad cell type", with_(grid={"machine.cpus": [2, "four"]}), "grid.machine.cpus", "machine.cpus='four'"),
    ("same scenario twice", with_(grid={"horizon_s": [60, 60.0]}), "grid", "same scenario"),
    ("zip unknown key", with_(zip=[["machine.cpu"]]), "zip[0][0]", "not a grid key"),
    ("zip unequal", with_(zip=[["victim.sched_at_handover", "groups[0].sched.rt_priority"]]), "zip[0]",
     "same number of values"),
    ("zip twice", with_(zip=[["victim.sched_at_handover"], ["victim.sched_at_handover"]]), "zip[1][0]",
     "already in zip[0]"),
    ("unknown policy", with_(policies=["upstrem_4_19"]), "policies[0]", "did you mean 'upstream_4_19'"),
    ("unknown option", with_(policies=[{"timeout_backoff": {"timeout": 3}}]), "policies[0].timeout_backoff.timeout",
     "did you mean 'timeout_s'"),
    ("bad option value", with_(policies=[{"timeout_backoff": {"timeout_s": -1}}]),
     "policies[0].timeout_backoff.timeout_s", "> 0"),
    ("duplicate policy", with_(policies=["upstream_4_19", {"upstream_4_19": {}}]), "policies[1]", "duplicate"),
    ("empty policies", with_(policies=[]), "policies", "non-empty"),
    ("replicates zero", with_(replicates=0), "replicates", ">= 1"),
    ("replicates bool", with_(replicates=True), "replicates", "integer"),
    ("adaptive typo", with_(replicates={"adaptive": {"ci_half_widht": 0.1}}), "replicates.adaptive.ci_half_widht",
     "did you mean 'ci_half_width'"),
    ("adaptive range", with_(replicates={"adaptive": {"ci_half_width": 0.02, "min": 50, "max": 10}}),
     "replicates.adaptive.max", ">= min"),
    ("adaptive width", with_(replicates={"adaptive": {"ci_half_width": 0}}), "replicates.adaptive.ci_half_width",
     "greater than 0"),
    ("top-level adaptive", with_(adaptive={"ci_half_width": 0.02}), "adaptive", "replicates: {adaptive:"),
    ("seed string", with_(seed="x"), "seed", "integer"),
    ("seed negative", with_(seed=-1), "seed", "greater than or equal to 0"),
    ("base bad key", with_(base={**SCENARIO, "machine": {"cpu": 4}}), "base.machine.cpu", "did you mean 'cpus'"),
    ("base missing file", with_(base="nope.yaml"), "base", "no such scenario file"),
    ("base wrong type", with_(base=3), "base", "scenario file path or a scenario mapping"),
    ("sample kind", with_(sample={"n": 2, "params": {"costs.exit_ms": {"lognormal": [0, 1]}}}),
     "sample.params.costs.exit_ms.lognormal", "did you mean 'loguniform'"),
    ("sample key", with_(sample={"n": 2, "params": {"costs.exit_m": {"uniform": [0, 1]}}}),
     "sample.params.costs.exit_m", "did you mean 'costs.exit_ms'"),
    ("sample overlaps grid", with_(sample={"n": 2, "params": {"machine.rt_runtime_share": {"int": [0, 1]}}}),
     "sample.params.machine.rt_runtime_share", "also varied by grid key"),
    ("sample bounds", with_(sample={"n": 2, "params": {"costs.exit_ms": {"uniform": [1, 0]}}}),
     "sample.params.costs.exit_ms.uniform", "lo < hi"),
    ("sample method", with_(sample={"method": "halton", "n": 2, "params": {"costs.exit_ms": {"uniform": [0, 1]}}}),
     "sample.method", "'sobol' or 'saltelli'"),
    ("sample no params", with_(sample={"n": 2}), "sample.params", "at least one key"),
    ("sobol n", with_(sample={"method": "sobol", "n": 6, "params": {"costs.exit_ms": {"uniform": [0, 1]}}}),
     "sample.n", "power of 2"),
    ("saltelli n", with_(sample={"method": "saltelli", "n": 12, "params": {"costs.exit_ms": {"uniform": [0, 1]}}}),
     "sample.n", "power of 2"),
    ("choice one value", with_(sample={"n": 2, "params": {"machine.preempt": {"choice": ["full"]}}}),
     "sample.params.machine.preempt.choice", "at least two values"),
    ("choice duplicate", with_(sample={"n": 2, "params": {"machine.preempt": {"choice": ["full", "none", "full"]}}}),
     "sample.params.machine.preempt.choice[2]", "duplicate value 'full'"),
    ("choice bad value", with_(sample={"n": 8, "params": {"machine.preempt": {"choice": ["full", "rt"]}}}),
     "sample.params.machine.preempt", "is not a valid scenario"),
    ("sample bad point", with_(sample={"n": 3, "params": {"machine.cpus": {"int": [0, 2]}}}),
     "sample.params.machine.cpus", "is not a valid scenario"),
    ("mlflow typo", with_(mlflow={"experimnt": "x"}), "mlflow.experimnt", "did you mean 'experiment'"),
    ("mlflow negative", with_(mlflow={"max_cell_runs": -1}), "mlflow.max_cell_runs", "greater than or equal"),
]


@pytest.mark.parametrize("case, data, path, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_names_the_key_path(case: str, data: dict, path: str, needle: str) -> None:
    with pytest.raises(SweepError) as e:
        parse(data)
    assert e.value.path == path, str(e.value)
    assert str(e.value).startswith(f"{path}: "), str(e.value)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "name",
    ["../escape", "a/b", "/abs", "..", "a..b", ".hidden", "", "x" * 101, "sp ace", "-dash", "a\\b", 42],
)
def test_sweep_name_cannot_escape_the_output_dir(name: object) -> None:
    with pytest.raises(SweepError) as e:
        parse(with_(name=name))
    assert e.value.path == "name"


@pytest.mark.parametrize("name", ["a", "handoff-vs-priority", "v1.2_final", "2018-11-14", "x" * 100])
def test_good_sweep_names(name: str) -> None:
    assert parse(with_(name=name)).name == name


def test_load_sweep_reports_yaml_and_file_problems(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="cannot read sweep file"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="invalid YAML"):
        load_sweep(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SweepError, match="must be a mapping"):
        load_sweep(listy)


def test_base_file_error_names_the_path_inside_the_scenario(tmp_path: Path) -> None:
    bad = dict(SCENARIO, groups=[dict(SCENARIO["groups"][0], sched={"policy": "normal", "nice": 40})])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(SweepError) as e:
        parse(with_(base="s.yaml", grid={}), base_dir=tmp_path)
    assert e.value.path == "base.groups[0].sched.nice"
    assert "s.yaml" in str(e.value)


def test_yaml_example_from_the_issue(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "handa.yaml").write_text(yaml.safe_dump(SCENARIO))
    f = tmp_path / "sweep.yaml"
    f.write_text(
        textwrap.dedent(
            """\
            name: handoff-vs-priority
            base: scenarios/handa.yaml
            grid:
              victim.sched_at_handover: [unchanged, idle]
              machine.rt_runtime_share: [true, false]
              groups[0].sched.rt_priority: [1, 50, 99]
            zip: []
            sample: {method: lhs, n: 0, seed: 1, params: {}}
            policies: [upstream_4_19, handoff_rfc_v2, handoff_oom_lock, timeout_backoff, upstream_6_1]
            replicates: 200
            seed: 20181116
            output: results/
            mlflow: {experiment: handoff-vs-priority, max_cell_runs: 2000}
            """
        )
    )
    spec = load_sweep(f)
    assert count_cells(spec) == 12 and len(spec.policies) == 5 and spec.replicates == 200
    assert spec.to_dict()["output"] == "results/" and "output" not in spec.to_dict(include_output=False)


# ---------------------------------------------------------------- the real policy registry


def test_real_registry_labels_and_option_errors() -> None:
    spec = parse_sweep(with_(policies="all"), Path("."))
    assert [p.name for p in spec.policies] == list(POLICIES)
    spec = parse_sweep(
        with_(policies=["upstream_4_19", {"timeout_backoff": {"timeout_s": 2}}, {"handoff_rfc_v2": {"skip_after": "pgtables"}}]),
        Path("."),
    )
    assert [p.label for p in spec.policies] == [
        "upstream_4_19",
        "timeout_backoff[timeout_s=2.0]",
        "handoff_rfc_v2[skip_after=pgtables]",
    ]
    with pytest.raises(SweepError) as e:
        parse_sweep(with_(policies=["upstream_4_91"]), Path("."))
    assert str(e.value) == "policies[0]: unknown policy 'upstream_4_91' (did you mean 'upstream_4_19'?)"
    with pytest.raises(SweepError) as e:
        parse_sweep(with_(policies=[{"timeout_backoff": {"timeout_s": -1}}]), Path("."))
    assert e.value.path == "policies[0].timeout_backoff.timeout_s"
    with pytest.raises(SweepError) as e:
        parse_sweep(with_(policies=[{"timeout_backoff": {"timeot_s": 1}}]), Path("."))
    assert e.value.path == "policies[0].timeout_backoff.timeot_s" and "did you mean 'timeout_s'" in str(e.value)


def test_sample_designs_over_numeric_and_categorical_keys() -> None:
    params = {
        "reaper.busy_elsewhere_p": {"uniform": [0.0, 0.1]},
        "machine.preempt": {"choice": ["none", "voluntary", "full"]},
        "reaper.cpus": {"choice": ["all", [0]]},
        "costs.exit_ms": {"loguniform": [0.01, 1.0]},
    }
    for method, n in (("lhs", 12), ("random", 12), ("sobol", 16), ("saltelli", 8)):
        spec = parse(with_(grid={"victim.sched_at_handover": ["unchanged", "idle"]},
                           sample={"method": method, "n": n, "params": params}))
        got = list(expand_cells(spec, "v"))
        assert count_cells(spec) == len(got)
        assert len({c.cell_id for c in got}) == len(got)  # exactly once: no two cells alike
        values = {tuple(map(str, (c.params["machine.preempt"], c.params["reaper.cpus"]))) for c in got}
        assert {v[0] for v in values} == {"none", "voluntary", "full"} and {v[1] for v in values} == {"all", "[0]"}
        assert all(c.scenario["reaper"]["cpus"] in ("all", [0]) for c in got)
        assert list(expand_cells(spec, "v")) == got  # deterministic in the seed
    # lhs strata: each category gets n/3 points
    spec = parse(with_(grid={}, sample={"method": "lhs", "n": 12, "params": params}))
    counts = {}
    for c in expand_cells(spec, "v"):
        counts[c.params["machine.preempt"]] = counts.get(c.params["machine.preempt"], 0) + 1
    assert counts == {"none": 4, "voluntary": 4, "full": 4}

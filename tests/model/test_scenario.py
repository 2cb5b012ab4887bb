"""Scenario schema: canonical round trips, shipped configs, and error paths."""

from __future__ import annotations

import copy
import json
import pickle
import time
from pathlib import Path

import pytest

from oommodel.distributions import Choice, LogNormal, Uniform
from oommodel.scenario import Scenario, ScenarioError
from oommodel.sched import SchedAttr, SchedPolicy

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "scenarios").glob("*.yaml"))
HANDA = ROOT / "configs" / "scenarios" / "handa-2018-11-14.yaml"

MINIMAL = {"groups": [{"name": "a", "count": 1, "role": "hog"}]}


def _with(path: str, value: object, base: dict | None = None) -> dict:
    """A copy of ``base`` (MINIMAL) with the dotted/indexed ``path`` set to ``value``."""
    d = copy.deepcopy(base if base is not None else MINIMAL)
    parts = path.replace("[", ".").replace("]", "").split(".")
    node = d
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return d


def test_expected_configs_present() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "handa-2018-11-14.yaml",
        "global-normal.yaml",
        "all-cpus-rt-busy.yaml",
        "handa-variant-idle-children.yaml",
        "idle-victim-no-throttling.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_round_trips(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), "each config starts with a comment saying what it reproduces"
    sc = Scenario.from_yaml(path)
    d = sc.to_dict()
    via_json = json.loads(json.dumps(d))
    assert via_json == d
    again = Scenario.from_dict(via_json)
    assert again == sc
    assert hash(again) == hash(sc)
    assert again.to_dict() == d
    assert pickle.loads(pickle.dumps(sc)) == sc


def test_handa_scenario_values() -> None:
    sc = Scenario.from_yaml(HANDA)
    assert sc.machine.cpus == 8 and sc.machine.hz == 1000 and sc.machine.preempt == "full"
    assert (sc.machine.rt_runtime_us, sc.machine.rt_period_us) == (950000, 1000000)
    assert sc.machine.rt_runtime_share is True
    assert sc.oom is not None and sc.oom.domain == "memcg" and sc.oom.limit_mb == 100.0
    (g,) = sc.groups
    assert (g.name, g.count, g.role) == ("children", 64, "allocator")
    assert g.sched.policy == "fifo" and g.sched.rt_priority == 99 and g.sched.nice is None
    assert g.cpus == (0,)
    assert g.rss_mb == 200.0 and g.oom_score_adj == 1000
    assert g.start_s == Uniform(0.0, 0.05)
    assert sc.victim.sched_at_handover == "idle"
    assert sc.costs.close_ms == LogNormal(1.0, 1.0)  # default filled
    assert "9dfd5c87-ae48-8ffb-fbc6-706d627658ff@i-love.sakura.ne.jp" in HANDA.read_text()


def test_defaults_filled_and_canonical() -> None:
    sc = Scenario.from_dict(MINIMAL)
    d = sc.to_dict()
    assert d["horizon_s"] == 120.0 and d["lockup_after_s"] == 20.0
    assert d["oom"] is None and sc.oom is None
    assert d["machine"]["cpus"] == 8 and d["machine"]["rt_runtime_share"] is True
    assert d["groups"][0]["sched"] == {"policy": "normal", "nice": 0}
    assert d["groups"][0]["cpus"] is None
    assert d["reaper"]["cpus"] == "all"
    assert d["mmap_sem"]["writer_hold_ms"] == {"uniform": [0.0, 2000.0]}
    assert d["costs"]["close_ms"] == {"lognormal": [1.0, 1.0]}
    # ints given for float fields are canonicalised, so these two are the same scenario
    a = Scenario.from_dict(_with("horizon_s", 60))
    b = Scenario.from_dict(_with("horizon_s", 60.0))
    assert a == b and hash(a) == hash(b) and a.to_json() == b.to_json()
    assert a != sc
    assert isinstance(a.to_dict()["horizon_s"], float)


def test_sched_defaults_per_policy() -> None:
    d = _with("groups[0].sched", {"policy": "batch"})
    assert Scenario.from_dict(d).groups[0].sched.nice == 0
    d = _with("groups[0].sched", {"policy": "idle"})
    s = Scenario.from_dict(d).groups[0].sched
    assert (s.policy, s.nice, s.rt_priority) == ("idle", None, None)
    assert Scenario.from_dict(d).to_dict()["groups"][0]["sched"] == {"policy": "idle"}
    # an explicit null means "absent", as in the canonical dict
    d = _with("groups[0].sched", {"policy": "rr", "rt_priority": 5, "nice": None})
    assert Scenario.from_dict(d).groups[0].sched.rt_priority == 5


def test_distributions_in_num_fields_round_trip() -> None:
    d = _with("groups[0].rss_mb", {"choice": [100, 200]})
    d = _with("victim.sched_at_handover", {"choice": ["idle", "normal19", "fifo50"]}, d)
    d = _with("costs.alloc_loop_us", {"lognormal": [4.6, 0.5]}, d)
    sc = Scenario.from_dict(d)
    assert sc.groups[0].rss_mb == Choice((100.0, 200.0))
    assert sc.victim.sched_at_handover == Choice(("idle", "normal19", "fifo50"))
    assert Scenario.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc


def test_scenario_is_immutable_and_hashable() -> None:
    sc = Scenario.from_dict(MINIMAL)
    with pytest.raises(AttributeError):
        sc.horizon_s = 5.0  # type: ignore[misc]
    with pytest.raises((AttributeError, ValueError)):  # pydantic: frozen instance
        sc.machine.cpus = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        sc.no_such_key  # noqa: B018
    assert len({sc, Scenario.from_dict(MINIMAL), Scenario.from_dict(_with("horizon_s", 1))}) == 2
    # the canonical dict is a copy: mutating it does not touch the scenario
    d = sc.to_dict()
    d["machine"]["cpus"] = 1
    assert sc.machine.cpus == 8


def test_scenario_error_is_value_error_with_path() -> None:
    with pytest.raises(ValueError) as info:
        Scenario.from_dict(_with("groups[0].sched", {"policy": "normal", "nice": 30}))
    err = info.value
    assert isinstance(err, ScenarioError)
    assert err.path == "groups[0].sched.nice"
    assert str(err) == "groups[0].sched.nice: must be in -20..19 (got 30)"


def test_scenario_error_pickles() -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(_with("machine.cpus", 0))
    back = pickle.loads(pickle.dumps(info.value))
    assert (back.path, str(back), back.errors) == (info.value.path, str(info.value), info.value.errors)


def test_all_errors_are_collected() -> None:
    d = _with("machine.cpus", 0)
    d = _with("machine.hz", 999, d)
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(d)
    assert [p for p, _ in info.value.errors] == ["machine.cpus", "machine.hz"]
    assert "1 more error" in str(info.value)


def test_unknown_key_suggests_nearest() -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(_with("victim.sched_at_handovr", "idle"))
    assert str(info.value) == "victim.sched_at_handovr: unknown key (did you mean 'sched_at_handover'?)"
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(_with("zzzz", 1))
    assert "did you mean" not in str(info.value) and "known keys" in str(info.value)


def test_from_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("machine: {cpus: [\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_yaml(bad)
    assert info.value.path == "" and "invalid YAML" in str(info.value)
    typo = tmp_path / "typo.yaml"
    typo.write_text("groups:\n  - {name: a, count: 1, role: hog, cpu: [0]}\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_yaml(typo)
    assert str(info.value).startswith("groups[0].cpu: unknown key (did you mean 'cpus'?)")
    sci = tmp_path / "sci.yaml"  # YAML 1.1 reads 1e-3 as a string
    sci.write_text("costs: {exit_ms: 1e-3}\ngroups:\n  - {name: a, count: 1, role: hog}\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_yaml(sci)
    assert info.value.path == "costs.exit_ms" and "1.0e-3" in str(info.value)


def test_sched_at_handover_takes_unchanged_or_the_sched_attr_grammar() -> None:
    for good in ("unchanged", "normal19", "batch-5", "fifo50", "idle"):
        assert Scenario.from_dict(_with("victim.sched_at_handover", good)).victim.sched_at_handover == good
    for bad in ("fifo0", "normal20", "idle1", "Fifo50", "", "normal"):
        with pytest.raises(ScenarioError) as info:
            Scenario.from_dict(_with("victim.sched_at_handover", bad))
        assert info.value.path == "victim.sched_at_handover"


def test_group_sched_gives_the_model_its_sched_attr() -> None:
    d = _with("groups", [{"name": "a", "count": 1, "role": "hog", "sched": {"policy": "fifo", "rt_priority": 7}},
                         {"name": "b", "count": 1, "role": "hog", "sched": {"policy": "batch", "nice": -3}},
                         {"name": "c", "count": 1, "role": "hog"}])
    attrs = [g.sched.attr for g in Scenario.from_dict(d).groups]
    assert attrs == [SchedAttr(SchedPolicy.FIFO, rt_priority=7), SchedAttr(SchedPolicy.BATCH, nice=-3),
                     SchedAttr(SchedPolicy.NORMAL)]


# (description, bad input, exact key path the message must start with)
G0 = {"name": "a", "count": 1, "role": "hog"}
BAD = [
    ("nice out of range", _with("groups[0].sched", {"policy": "normal", "nice": 20}), "groups[0].sched.nice"),
    ("nice on second group", {"groups": [G0, {**G0, "name": "b", "sched": {"policy": "batch", "nice": -21}}]},
     "groups[1].sched.nice"),
    ("fifo without rt_priority", _with("groups[0].sched", {"policy": "fifo"}), "groups[0].sched.rt_priority"),
    ("fifo with nice", _with("groups[0].sched", {"policy": "fifo", "rt_priority": 5, "nice": 0}),
     "groups[0].sched.nice"),
    ("normal with rt_priority", _with("groups[0].sched", {"policy": "normal", "rt_priority": 5}),
     "groups[0].sched.rt_priority"),
    ("idle with nice", _with("groups[0].sched", {"policy": "idle", "nice": 0}), "groups[0].sched.nice"),
    ("rt_priority 100", _with("groups[0].sched", {"policy": "rr", "rt_priority": 100}),
     "groups[0].sched.rt_priority"),
    ("unknown policy", _with("groups[0].sched", {"policy": "deadline"}), "groups[0].sched.policy"),
    ("count is bool", _with("groups[0].count", True), "groups[0].count"),
    ("count zero", _with("groups[0].count", 0), "groups[0].count"),
    ("count float", _with("groups[0].count", 2.0), "groups[0].count"),
    ("cpus is string", _with("machine.cpus", "8"), "machine.cpus"),
    ("cpus too many", _with("machine.cpus", 257), "machine.cpus"),
    ("hz not allowed", _with("machine.hz", 500), "machine.hz"),
    ("hz as string", _with("machine.hz", "1000"), "machine.hz"),
    ("preempt typo", _with("machine.preempt", "ful"), "machine.preempt"),
    ("rt_runtime_share as int", _with("machine.rt_runtime_share", 1), "machine.rt_runtime_share"),
    ("rt_runtime above period", _with("machine.rt_runtime_us", 2000000), "machine.rt_runtime_us"),
    ("rt_runtime below -1", _with("machine.rt_runtime_us", -2), "machine.rt_runtime_us"),
    ("rt_period too small", _with("machine.rt_period_us", 999), "machine.rt_period_us"),
    ("probability above 1", _with("machine.ksoftirqd_awake_p", 1.5), "machine.ksoftirqd_awake_p"),
    ("horizon zero", _with("horizon_s", 0), "horizon_s"),
    ("horizon nan", _with("horizon_s", float("nan")), "horizon_s"),
    ("machine not a mapping", _with("machine", 5), "machine"),
    ("oom without limit", _with("oom", {"domain": "memcg"}), "oom.limit_mb"),
    ("oom bad domain", _with("oom", {"domain": "cgroup", "limit_mb": 10}), "oom.domain"),
    ("oom limit negative", _with("oom", {"domain": "global", "limit_mb": -1}), "oom.limit_mb"),
    ("groups missing", {}, "groups"),
    ("groups empty", {"groups": []}, "groups"),
    ("groups not a list", {"groups": 3}, "groups"),
    ("group name missing", {"groups": [{"count": 1, "role": "hog"}]}, "groups[0].name"),
    ("group name bad", _with("groups[0].name", "9lives"), "groups[0].name"),
    ("group name reserved", _with("groups[0].name", "oom_reaper"), "groups[0].name"),
    ("duplicate group names", {"groups": [G0, G0]}, "groups[1].name"),
    ("role typo", _with("groups[0].role", "allocater"), "groups[0].role"),
    ("cpus outside machine", _with("groups[0].cpus", [0, 8]), "groups[0].cpus[1]"),
    ("cpus duplicate", _with("groups[0].cpus", [1, 1]), "groups[0].cpus[1]"),
    ("cpus empty", _with("groups[0].cpus", []), "groups[0].cpus"),
    ("cpus negative", _with("groups[0].cpus", [-1]), "groups[0].cpus[0]"),
    ("cpus bool entry", _with("groups[0].cpus", [True]), "groups[0].cpus[0]"),
    ("rss string", _with("groups[0].rss_mb", "200"), "groups[0].rss_mb"),
    ("rss negative", _with("groups[0].rss_mb", -1), "groups[0].rss_mb"),
    ("start_s uniform below 0", _with("groups[0].start_s", {"uniform": [-1, 2]}), "groups[0].start_s"),
    ("start_s uniform reversed", _with("groups[0].start_s", {"uniform": [2, 1]}), "groups[0].start_s"),
    ("start_s two dist keys", _with("groups[0].start_s", {"uniform": [0, 1], "choice": [1]}), "groups[0].start_s"),
    ("start_s unknown dist", _with("groups[0].start_s", {"normal": [0, 1]}), "groups[0].start_s"),
    ("oom_score_adj range", _with("groups[0].oom_score_adj", 1001), "groups[0].oom_score_adj"),
    ("threads_per_process range", _with("groups[0].threads_per_process", 65), "groups[0].threads_per_process"),
    ("unknown group key", _with("groups[0].rss", 1), "groups[0].rss"),
    ("unknown top-level key", _with("horizon", 1), "horizon"),
    ("memory fractions do not sum", _with("victim.memory", {"anon": 0.5, "mlocked": 0.4}), "victim.memory"),
    ("memory fraction above 1", _with("victim.memory", {"anon": 1.5}), "victim.memory.anon"),
    ("handover bad string", _with("victim.sched_at_handover", "lowest"), "victim.sched_at_handover"),
    ("handover bad choice item", _with("victim.sched_at_handover", {"choice": ["idle", "normal25"]}),
     "victim.sched_at_handover.choice[1]"),
    ("handover empty choice", _with("victim.sched_at_handover", {"choice": []}), "victim.sched_at_handover"),
    ("handover uniform", _with("victim.sched_at_handover", {"uniform": [0, 1]}), "victim.sched_at_handover"),
    ("alloc_loop_us zero", _with("costs.alloc_loop_us", 0), "costs.alloc_loop_us"),
    ("alloc_loop_us uniform from 0", _with("costs.alloc_loop_us", {"uniform": [0, 10]}), "costs.alloc_loop_us"),
    ("close_ms negative sigma", _with("costs.close_ms", {"lognormal": [1, -1]}), "costs.close_ms"),
    ("close_ms choice with string", _with("costs.close_ms", {"choice": [1, "x"]}), "costs.close_ms"),
    ("reaper cpus word", _with("reaper.cpus", "any"), "reaper.cpus"),
    ("reaper cpus outside machine", _with("reaper.cpus", [9]), "reaper.cpus[0]"),
    ("reaper sched missing policy", _with("reaper.sched", {"nice": 0}), "reaper.sched.policy"),
    ("mmap_sem unknown key", _with("mmap_sem.writer_hold", 1), "mmap_sem.writer_hold"),
    ("writer_hold_ms negative choice", _with("mmap_sem.writer_hold_ms", {"choice": [-5, 5]}),
     "mmap_sem.writer_hold_ms"),
]


def test_bad_table_is_large_enough() -> None:
    assert len(BAD) >= 20
    assert len({name for name, _, _ in BAD}) == len(BAD)


@pytest.mark.parametrize(("data", "path"), [(d, p) for _, d, p in BAD], ids=[n for n, _, _ in BAD])
def test_bad_input_names_its_key_path(data: dict, path: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(data)
    assert info.value.path == path
    assert str(info.value).startswith(path + ": ")
    # the message says something beyond the path
    assert len(str(info.value)) > len(path) + 10


def test_root_must_be_mapping() -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict([1, 2])  # type: ignore[arg-type]
    assert info.value.path == ""


def test_from_dict_is_fast() -> None:
    """It runs once per simulation in sweeps: well under a millisecond in practice."""
    d = Scenario.from_yaml(HANDA).to_dict()
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(50):
            Scenario.from_dict(d)
        runs.append((time.perf_counter() - t0) / 50)
    assert sorted(runs)[3] < 2e-3  # generous bound for a loaded 2-core CI box

"""Machine profiles (`machine.profile`) and the first-touch fault cost (`costs.first_touch_ms_per_mb`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oommodel import Scenario, ScenarioError, simulate
from oommodel.profiles import check_profile, profile_names, profile_values

ROOT = Path(__file__).resolve().parents[2]
HANDA = ROOT / "configs/scenarios/handa-2018-11-14.yaml"
PREEMPT_FULL = ROOT / "configs/scenarios/handa-preempt-full.yaml"


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_default_scenarios_keep_their_canonical_dict():
    # Sweeps hash the canonical dict into cell ids: the new keys must not appear at their defaults.
    d = Scenario.from_yaml(HANDA).to_dict()
    assert "profile" not in d["machine"]
    assert "first_touch_ms_per_mb" not in d["costs"]
    assert Scenario.from_dict(d) == Scenario.from_yaml(HANDA)


def test_shipped_profiles_are_valid():
    assert {"bare_metal", "qemu_tcg"} <= set(profile_names())
    assert profile_values("bare_metal") == {}
    tcg = profile_values("qemu_tcg")
    assert tcg, "qemu_tcg sets measured costs"
    for name in profile_names():
        sc = dict(raw(HANDA))
        sc["machine"] = {**sc["machine"], "profile": name}
        Scenario.from_dict(sc)  # every value of every profile validates


def test_profile_fills_unset_keys_and_explicit_keys_win():
    tcg = profile_values("qemu_tcg")
    key = "costs.touch_ms_per_mb"
    assert key in tcg
    sc = raw(HANDA)
    sc["machine"]["profile"] = "qemu_tcg"
    d = Scenario.from_dict(sc).to_dict()
    assert d["machine"]["profile"] == "qemu_tcg"
    assert d["costs"]["touch_ms_per_mb"] == tcg[key]
    sc["costs"] = {"touch_ms_per_mb": 0.125}
    d2 = Scenario.from_dict(sc).to_dict()
    assert d2["costs"]["touch_ms_per_mb"] == 0.125
    # resolved once: the canonical dict validates to the same scenario (no second application)
    assert Scenario.from_dict(d2).to_dict() == d2


def test_unknown_profile_names_the_key_and_the_known_ones():
    sc = raw(HANDA)
    sc["machine"]["profile"] = "qemu_kvmm"
    with pytest.raises(ScenarioError) as e:
        Scenario.from_dict(sc)
    assert e.value.path == "machine.profile"
    assert "qemu_tcg" in str(e.value)


@pytest.mark.parametrize("key", ["machine.cpus", "machine.hz", "machine.preempt", "groups", "costs"])
def test_a_profile_cannot_set_the_workload_or_the_kernel_build(key):
    with pytest.raises(ValueError):
        check_profile({"values": {key: 1}})


def test_first_touch_equal_to_touch_is_the_old_model_bit_for_bit():
    sc = raw(PREEMPT_FULL)
    a = simulate(sc, "upstream_6_1", seed=3)
    sc["costs"] = {"first_touch_ms_per_mb": 0.25}  # = touch_ms_per_mb's default
    b = simulate(sc, "upstream_6_1", seed=3)
    assert a == b


def test_reused_pages_are_cheaper_than_fresh_ones():
    # 64 FIFO children on CPU 0: the first child faults 100 MB of fresh memory, each later one refaults
    # what the previous victim freed. With fresh pages 10x dearer the first kill is as late as with
    # 10 ms/MB everywhere, but the killing phase (which the preempt=full exit wait spans) is far shorter.
    sc = raw(PREEMPT_FULL)
    sc["costs"] = {"touch_ms_per_mb": 10.0}
    slow = simulate(sc, "upstream_6_1", seed=1)
    sc["costs"] = {"touch_ms_per_mb": 1.0, "first_touch_ms_per_mb": 10.0}
    mixed = simulate(sc, "upstream_6_1", seed=1)
    assert mixed.first_kill_s == pytest.approx(slow.first_kill_s, rel=0.05)
    assert mixed.kills == 64
    assert mixed.exit_delay_max_s < 0.3 * slow.exit_delay_max_s

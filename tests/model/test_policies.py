"""Policy data: the exit steps an option selects, and what a policy may not declare."""

from __future__ import annotations

import dataclasses

import pytest

from oommodel import POLICIES, PolicyError
from oommodel.policies.base import Op
from oommodel.policies.handoff_rfc_v2 import EXIT_SKIP_AFTER_CLOSE, EXIT_SKIP_AFTER_PGTABLES


def test_the_skip_after_option_selects_its_exit_steps() -> None:
    pol = POLICIES["handoff_rfc_v2"]
    assert pol.steps_for(pol.check_options({})) == EXIT_SKIP_AFTER_PGTABLES
    assert pol.steps_for(pol.check_options({"skip_after": "close"})) == EXIT_SKIP_AFTER_CLOSE
    ops = [s.op for s in EXIT_SKIP_AFTER_CLOSE]
    assert ops[-1] is Op.SET_SKIP                          # after the remove_vma loop, as posted


def test_a_policy_without_variants_always_has_its_own_steps() -> None:
    pol = POLICIES["upstream_4_19"]
    assert pol.steps_for(pol.check_options({})) is pol.exit_steps


def test_two_options_selecting_exit_steps_are_refused_not_half_honoured() -> None:
    pol = POLICIES["handoff_rfc_v2"]
    with pytest.raises(PolicyError, match="at most one option"):
        dataclasses.replace(pol, options={**pol.options, "other": "a"},
                            option_variants={**pol.option_variants, "other": {"a": pol.exit_steps}})
    with pytest.raises(PolicyError, match="not an option"):
        dataclasses.replace(pol, options={}, option_variants=pol.option_variants)


def test_every_policy_names_the_kernel_it_stands_for() -> None:
    bases = {name: pol.kernel_base for name, pol in POLICIES.items()}
    assert all(b.strip() for b in bases.values()), bases
    assert bases["upstream_4_19"] == "4.19" and bases["upstream_6_1"] == "6.1"
    assert bases["upstream_5_10"] == "5.10.223 (Debian)"


def test_only_the_5_10_and_6_1_bases_carry_the_delayed_reaper_and_the_exit_requeue() -> None:
    # OOM_REAPER_DELAY came with 5.18 (backported to Debian's 5.10.223); the resched_curr() at the end
    # of sched_move_task() with 5.6: neither belongs to a variant posted against 4.18-4.20.
    late = {name for name, pol in POLICIES.items() if pol.oom_reaper_delay_s > 0 or pol.exit_sched_move_resched}
    assert late == {"upstream_5_10", "upstream_6_1"}
    for name in late:
        assert POLICIES[name].kernel_base.split()[0] in ("5.10.223", "6.1")


def test_upstream_5_10_is_the_4_19_exit_path_with_the_6_1_reaper_start() -> None:
    from oommodel.policies.upstream_4_19 import EXIT_4_19

    pol, old, new = POLICIES["upstream_5_10"], POLICIES["upstream_4_19"], POLICIES["upstream_6_1"]
    assert pol.exit_steps is EXIT_4_19 and pol.reaper is old.reaper
    assert pol.oom_reaper_delay_s == new.oom_reaper_delay_s == 2.0
    assert pol.exit_sched_move_resched and pol.memcg_oom_lock_killable
    assert not pol.reaper_reaps_mlocked  # 5.10's __oom_reap_task_mm() still skips VM_LOCKED vmas


def test_adding_a_policy_leaves_every_other_policys_outcomes_alone(monkeypatch) -> None:
    # Random streams are keyed by name, never by a policy's place in the registry: the registry without
    # upstream_5_10 (main before it) gives the same outcomes for its neighbours.
    from pathlib import Path
    from types import MappingProxyType

    import oommodel.policies as registry
    from oommodel import Scenario, simulate

    sc = Scenario.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "handa-2018-11-14.yaml")
    names = ("upstream_4_19", "direct_reap", "upstream_6_1")
    now = [dataclasses.asdict(simulate(sc, p, 3)) for p in names]
    monkeypatch.setattr(registry, "POLICIES",
                        MappingProxyType({k: v for k, v in registry.POLICIES.items() if k != "upstream_5_10"}))
    with pytest.raises(PolicyError):
        simulate(sc, "upstream_5_10", 3)
    assert [dataclasses.asdict(simulate(sc, p, 3)) for p in names] == now

"""The exit path's mmu_gather and the reaper's idle exit (issue 13, fid13b).

The 5.10 boots of Handa's reproducer show victims of 102696 kB, then 77088 kB: the first victim,
starved at the RFC v2 handover point (between `unmap_vmas()` and `tlb_finish_mmu()`), keeps about
25 MB of unmapped pages charged in its `struct mmu_gather`. These tests pin the mechanism.
"""

import pytest
import yaml

from oommodel import Scenario, ScenarioError, simulate
from oommodel.kernel.costs import MMU_GATHER_MAX_MB

HANDA = "configs/scenarios/handa-2018-11-14.yaml"
TCG_IDLE_EXIT = {"lognormal": [8.9, 1.37]}   # median ~7.3 ms: the 5.10 TCG boots


def _handa(**over: object) -> Scenario:
    """The shipped file with keys set, read raw so that a `machine.profile` fills every key it measures."""
    with open(HANDA, encoding="utf-8") as f:
        d = yaml.safe_load(f)
    for path, value in over.items():
        section, key = path.split("__")
        d.setdefault(section, {})[key] = value
    return Scenario.from_dict(d)


def test_gather_limit_is_the_kernels_9698_pages() -> None:
    assert MMU_GATHER_MAX_MB == pytest.approx(9698 * 4 / 1024)


def test_a_victim_starved_at_the_handover_point_keeps_its_gather_charged() -> None:
    """Reaper pinned far away and late (idle exit 50 ms): the FIFO victim unmaps its 100 MB itself,
    flushes two full gathers and is made SCHED_IDLE holding the rest; the next child can then fault
    only the limit less that remainder before it kills itself."""
    sc = _handa(machine__idle_exit_us=50_000.0, machine__topology="shared_llc", machine__profile="qemu_tcg")
    out = simulate(sc, "handoff_rfc_v2", seed=0)
    assert out.handed_over and out.lockup
    assert out.lockup_reason == "victim_starved_after_handover"
    freed_by_victim = out.memory_freed_mb
    # 100 MB less one gather's remainder (100 - 2 * 37.88 = 24.2 MB) never came back
    assert freed_by_victim == pytest.approx(2 * MMU_GATHER_MAX_MB, abs=0.5)


def test_upstream_4_19_self_reap_leaves_nothing_in_the_gather() -> None:
    """v4.19's exit path reaps with its own gather and finishes it before unmap_vmas(): the hack
    after unmap_vmas() starves nothing that holds memory, and no later victim is smaller."""
    sc = _handa(machine__idle_exit_us=50_000.0, machine__topology="shared_llc", machine__profile="qemu_tcg")
    out = simulate(sc, "upstream_4_19", seed=0)
    assert not out.lockup
    assert out.kills == 64


def test_idle_exit_zero_is_the_old_model() -> None:
    d = Scenario.from_yaml(HANDA).to_dict()
    assert "idle_exit_us" not in d["machine"]          # omitted at its default: old cell ids stand
    assert Scenario.from_yaml(HANDA).machine.idle_exit_us == 0.0


def test_idle_exit_rejects_a_negative_value() -> None:
    with pytest.raises(ScenarioError, match=r"machine\.idle_exit_us"):
        _handa(machine__idle_exit_us=-1.0)


def test_tcg_like_machine_locks_up_under_rfc_v2_and_not_under_oom_lock() -> None:
    """The kernel rows: rfc_v2 8/8 lockups, handoff_oom_lock 0/8, upstream_4_19 0/8 (5.10, TCG)."""
    sc = _handa(machine__idle_exit_us=TCG_IDLE_EXIT, machine__topology="shared_llc", machine__profile="qemu_tcg")
    seeds = range(6)
    b = [simulate(sc, "handoff_rfc_v2", seed=s) for s in seeds]
    assert sum(o.lockup for o in b) >= 5
    assert all(o.lockup_reason == "victim_starved_after_handover" for o in b if o.lockup)
    c = [simulate(sc, "handoff_oom_lock", seed=s) for s in seeds]
    assert not any(o.lockup for o in c)
    assert sum(o.handovers for o in c) > 0
    a = [simulate(sc, "upstream_4_19", seed=s) for s in seeds]
    assert not any(o.lockup or o.handed_over for o in a)

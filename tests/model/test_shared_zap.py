"""`reaper.shared_zap`: a reap that meets the victim's `unmap_vmas()` shares what is left with it.

The patched 5.10 boots of Handa's reproducer show victims that shrink by amounts that are not whole
`mmu_gather`s (102696, 77616, 67584, 39600, 31416, then 856 kB), and handovers only to victims of a
few MB (benchmarks/handover_victims.py). Without the key the model gives all that is left to whichever
of the two finishes first, so a 75.8 MB victim keeps nothing in its gather and later victims never
shrink below 75.8 MB.
"""

import pytest
import simpy
import yaml

from oommodel import POLICIES, Scenario, ScenarioError
from oommodel.kernel.mm import Mm
from oommodel.kernel.world import World

HANDA = "configs/scenarios/handa-2018-11-14.yaml"


def _victims(shared: bool, seed: int = 0) -> list:
    """Victims of the 5.10 boots' machine with the victim's zap as slow as those boots' (about
    1 s/GB: every victim loses the race to the reaper), no priority hack."""
    with open(HANDA, encoding="utf-8") as f:
        d = yaml.safe_load(f)
    d["machine"].update(topology="shared_llc", profile="qemu_tcg")
    d.setdefault("costs", {})["unmap_ms_per_gb"] = 1000.0
    d["victim"]["sched_at_handover"] = "unchanged"
    d.setdefault("reaper", {})["shared_zap"] = shared
    sc = Scenario.from_dict(d)
    pol = POLICIES["handoff_rfc_v2"]
    world = World(sc, pol, pol.check_options({}), seed)
    world.run()
    return world.state.victims


def test_take_reapable_takes_anon_in_proportion_and_never_more_than_there_is() -> None:
    mm = Mm(simpy.Environment(), 1, 1, (0.5, 0.25, 0.25), 2.0)
    mm.touch(100.0)
    assert mm.take_reapable(10.0, reap_mlocked=False) == pytest.approx(10.0)
    assert mm.anon_mb == pytest.approx(40.0) and mm.mlocked_mb == pytest.approx(25.0)
    assert mm.take_reapable(20.0, reap_mlocked=True) == pytest.approx(20.0)
    assert mm.anon_mb + mm.mlocked_mb == pytest.approx(45.0)
    assert mm.anon_mb / mm.mlocked_mb == pytest.approx(40.0 / 25.0)
    assert mm.take_reapable(1000.0, reap_mlocked=True) == pytest.approx(45.0)
    assert mm.anon_mb == 0.0 and mm.mlocked_mb == 0.0 and mm.file_mb == pytest.approx(25.0)


def test_without_the_key_later_victims_never_shrink_below_the_first_victims_gather() -> None:
    sizes = [v.badness_at_kill_mb for v in _victims(shared=False)]
    assert len(sizes) == 64
    assert min(sizes) > 75.0


def test_a_shared_zap_leaves_victims_arbitrary_gathers_so_victims_shrink_as_on_5_10() -> None:
    victims = _victims(shared=True)
    sizes = [v.badness_at_kill_mb for v in victims]
    assert sizes[0] > 100.0
    assert min(sizes) < 4.0                          # the kernel's last victims: 856 kB .. 3 MB
    assert any(4.0 < s < 70.0 for s in sizes)        # not whole gathers below the first victim's size
    # the reaper set MMF_OOM_SKIP on the first victim: it joined its zap and took its share
    assert victims[0].released_by is not None and victims[0].released_by.value == "reaper"


def test_the_key_is_a_bool_with_its_path_in_the_error() -> None:
    with open(HANDA, encoding="utf-8") as f:
        d = yaml.safe_load(f)
    d.setdefault("reaper", {})["shared_zap"] = "sometimes"
    with pytest.raises(ScenarioError, match=r"reaper\.shared_zap"):
        Scenario.from_dict(d)


def test_the_canonical_dict_leaves_the_key_out_at_its_default_so_cell_ids_stand() -> None:
    sc = Scenario.from_yaml(HANDA)
    d = sc.to_dict()
    assert "shared_zap" not in d["reaper"]
    d["reaper"]["shared_zap"] = False
    assert Scenario.from_dict(d).to_dict()["reaper"]["shared_zap"] is False

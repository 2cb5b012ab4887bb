"""Per-victim records of a patched 5.10 boot (sweeps/calibrate/victims.py) and the model's (Process fields).

The boot below (kernel-5.10, seed 0, shared_llc, hack on) is the one whose console MODEL.md section 7
quotes: six reaped victims that shrink 102696 -> 31416 kB, then a 856 kB child handed over 1 ms after
its kill, then the stall.
"""

import math
from pathlib import Path

import yaml

from oommodel import POLICIES, Scenario
from oommodel.kernel.world import World
from sweeps.calibrate.victims import boot_victims

REF = Path(__file__).resolve().parents[2] / "calibration" / "reference" / "kernel-5.10"
BOOT = REF / "logs" / "handa-2018-11-14-handoff_rfc_v2-idle-pgtables-20261202T122033-run0.log"


def test_boot_victims_reads_sizes_handover_and_who_set_the_flag() -> None:
    vs = boot_victims(BOOT.read_text(encoding="utf-8"))
    assert [v.pid for v in vs] == [101, 98, 102, 97, 100, 95, 96]
    assert [v.anon_rss_kb for v in vs] == [102696, 77616, 67584, 39600, 39600, 31416, 856]
    assert [v.index for v in vs] == list(range(1, 8))
    assert [v.handed_over for v in vs] == [False] * 6 + [True]
    assert [v.skip_by for v in vs] == ["reaper"] * 6 + ["exit"]
    last = vs[-1]
    assert math.isclose(last.kill_to_handover_s, 29.021604 - 29.020564, abs_tol=1e-6)
    assert math.isnan(vs[0].kill_to_handover_s)
    assert math.isclose(vs[0].kill_to_skip_s, 18.350619 - 17.662835, abs_tol=1e-6)
    # every earlier victim was still alive (blocked at the handover point) at each later kill
    assert [v.alive_before for v in vs] == list(range(7))


def test_kills_after_the_stall_declaration_are_not_victims_of_the_run() -> None:
    """The watchdog kills the children itself after its stall declaration: by printk time, not line order."""
    text = BOOT.read_text(encoding="utf-8")
    assert "[   49.030499] oomsweep: stall t=" in text
    early = text.replace("[   49.030499] oomsweep: stall t=", "[   29.000000] oomsweep: stall t=", 1)
    assert [v.pid for v in boot_victims(early)] == [101, 98, 102, 97, 100, 95]


def test_the_model_records_each_victims_size_self_kill_and_handover_time() -> None:
    with open("configs/scenarios/handa-2018-11-14.yaml", encoding="utf-8") as f:
        d = yaml.safe_load(f)
    d["machine"].update(topology="shared_llc", profile="qemu_tcg")
    sc = Scenario.from_dict(d)
    pol = POLICIES["handoff_rfc_v2"]
    world = World(sc, pol, pol.check_options({}), 0)
    out = world.run()
    victims = world.state.victims
    assert len(victims) == out.kills >= 1
    # the running FIFO child, with the most memory, kills itself: the memcg limit's worth of rss
    first = victims[0]
    assert first.killed_itself and 95.0 < first.badness_at_kill_mb < 101.0
    handed = [v for v in victims if v.handed_over]
    assert len(handed) == out.handovers
    for v in handed:
        assert v.kill_time is not None and v.handover_time is not None and v.handover_time >= v.kill_time
    for v in victims:
        if not v.handed_over:
            assert v.handover_time is None

"""SchedAttr / MachineSpec values and the kernel weight table."""

import pytest

from oommodel.sched import SCHED_PRIO_TO_WEIGHT, MachineSpec, SchedAttr, SchedPolicy, WEIGHT_IDLEPRIO


def test_weight_table_matches_kernel_endpoints() -> None:
    assert len(SCHED_PRIO_TO_WEIGHT) == 40
    assert SCHED_PRIO_TO_WEIGHT[0] == 88761      # nice -20
    assert SCHED_PRIO_TO_WEIGHT[20] == 1024      # nice 0
    assert SCHED_PRIO_TO_WEIGHT[39] == 15        # nice 19
    assert WEIGHT_IDLEPRIO == 3
    # ~1.25x per nice level everywhere
    for a, b in zip(SCHED_PRIO_TO_WEIGHT, SCHED_PRIO_TO_WEIGHT[1:]):
        assert 1.15 < a / b < 1.35


@pytest.mark.parametrize(
    "text, attr",
    [
        ("idle", SchedAttr(SchedPolicy.IDLE)),
        ("normal19", SchedAttr(SchedPolicy.NORMAL, nice=19)),
        ("batch-5", SchedAttr(SchedPolicy.BATCH, nice=-5)),
        ("fifo50", SchedAttr(SchedPolicy.FIFO, rt_priority=50)),
        ("rr10", SchedAttr(SchedPolicy.RR, rt_priority=10)),
    ],
)
def test_parse(text: str, attr: SchedAttr) -> None:
    assert SchedAttr.parse(text) == attr
    assert SchedAttr.parse(str(attr)) == attr


@pytest.mark.parametrize("text", ["fifo", "fifo0", "fifo100", "normal", "normal20", "idle3", "deadline", "rr-1", "",
                                  "Fifo50", " idle", "unchanged"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        SchedAttr.parse(text)


def test_attr_properties_and_validation() -> None:
    assert SchedAttr(SchedPolicy.FIFO, rt_priority=99).is_rt
    assert SchedAttr(SchedPolicy.RR, rt_priority=1).weight == 0
    assert not SchedAttr(SchedPolicy.IDLE).is_rt
    assert SchedAttr(SchedPolicy.IDLE).weight == 3
    assert SchedAttr(SchedPolicy.NORMAL, nice=19).weight == 15
    assert SchedAttr(SchedPolicy.BATCH, nice=-20).weight == 88761
    assert SchedAttr("fifo", rt_priority=5).policy is SchedPolicy.FIFO  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SchedAttr(SchedPolicy.FIFO)
    with pytest.raises(ValueError):
        SchedAttr(SchedPolicy.NORMAL, rt_priority=5)
    with pytest.raises(ValueError):
        SchedAttr(SchedPolicy.FIFO, rt_priority=5, nice=1)


def test_machine_spec_validation() -> None:
    assert MachineSpec(cpus=8).rt_throttling
    assert not MachineSpec(cpus=8, rt_runtime_us=-1).rt_throttling
    assert not MachineSpec(cpus=8, rt_runtime_us=1000000).rt_throttling
    with pytest.raises(ValueError):
        MachineSpec(cpus=0)
    with pytest.raises(ValueError):
        MachineSpec(cpus=2, preempt="lazy")

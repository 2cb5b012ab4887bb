"""CFS sharing: sched_prio_to_weight ratios, SCHED_IDLE, demand caps, run() completion times."""

import pytest
import simpy

from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy

NICE0 = SchedAttr(SchedPolicy.NORMAL)


def _machine(cpus: int = 1, **kw: object) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    return env, Machine(env, MachineSpec(cpus=cpus, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "other, w_other",
    [(SchedAttr(SchedPolicy.NORMAL, nice=19), 15), (SchedAttr(SchedPolicy.IDLE), 3),
     (SchedAttr(SchedPolicy.BATCH, nice=5), 335)],
)
def test_two_spinners_share_by_weight(other: SchedAttr, w_other: int) -> None:
    env, m = _machine()
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", other, [0])
    m.spin(a)
    m.spin(b)
    env.run(until=10.0)
    ta, tb = m.cpu_time(a), m.cpu_time(b)
    assert ta + tb == pytest.approx(10.0, rel=1e-9)
    assert ta / tb == pytest.approx(1024 / w_other, rel=0.01)
    assert tb == pytest.approx(10.0 * w_other / (1024 + w_other), rel=0.01)
    m.check_invariants()


def test_run_completes_at_analytic_time_while_sharing() -> None:
    env, m = _machine()
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", SchedAttr(SchedPolicy.NORMAL, nice=5), [0])
    m.spin(b)
    done: list[float] = []

    def proc() -> simpy.events.ProcessGenerator:
        yield m.run(a, 1.0)
        done.append(env.now)
        m.block(a)

    env.process(proc())
    env.run(until=5.0)
    assert done == [pytest.approx(1.0 * (1024 + 335) / 1024, rel=1e-9)]
    assert m.cpu_time(a) == pytest.approx(1.0, abs=1e-9)
    assert m.cpu_time(b) == pytest.approx(5.0 - 1.0, rel=1e-9)


def test_run_completion_moves_when_competitor_blocks() -> None:
    env, m = _machine()
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", NICE0, [0])
    done: list[float] = []

    def runner() -> simpy.events.ProcessGenerator:
        yield m.run(a, 1.0)
        done.append(env.now)

    def competitor() -> simpy.events.ProcessGenerator:
        m.spin(b)
        yield env.timeout(0.5)
        m.block(b)

    env.process(runner())
    env.process(competitor())
    env.run()
    # 0.25 s of work in the first 0.5 s at rate 1/2, then 0.75 s alone.
    assert done == [pytest.approx(1.25, rel=1e-12)]


def test_poller_demand_caps_and_leftover_goes_to_spinner() -> None:
    env, m = _machine()
    poller = m.spawn("p", "g", NICE0, [0])
    spinner = m.spawn("s", "g", SchedAttr(SchedPolicy.NORMAL, nice=19), [0])
    m.spin(poller, demand=0.1)
    m.spin(spinner)
    assert m.rate(poller) == pytest.approx(0.1)
    assert m.rate(spinner) == pytest.approx(0.9)
    m.spin(poller, demand=1.0)
    assert m.rate(poller) == pytest.approx(1024 / 1039)
    m.check_invariants()


def test_run_zero_work_is_an_event_that_already_succeeded() -> None:
    env, m = _machine()
    a = m.spawn("a", "g", NICE0)
    ev = m.run(a, 0.0)
    assert ev.triggered and ev.ok and ev.value is None
    assert a.runnable and a.demand == 0.0 and m.rate(a) == 0.0


def test_thread_keeps_queue_place_after_run_and_drops_demand_if_no_call_follows() -> None:
    env, m = _machine()
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", NICE0, [0])
    seen: list[tuple[bool, float]] = []

    def proc() -> simpy.events.ProcessGenerator:
        yield m.run(a, 0.01)
        seen.append((a.runnable, m.cpu_time(a)))
        yield env.timeout(0.01)              # no call on a for a while: it must not keep the CPU
        seen.append((a.runnable, a.demand))
        m.block(a)

    m.spin(b)
    env.process(proc())
    env.run(until=0.05)
    assert seen[0] == (True, pytest.approx(0.01))
    assert seen[1] == (True, 0.0)
    assert not a.runnable and m.cpu_time(a) == pytest.approx(0.01)
    # b had the whole CPU from the instant a's run ended
    assert m.cpu_time(b) == pytest.approx(0.05 - 0.01)


def test_set_attr_to_idle_at_run_time() -> None:
    env, m = _machine()
    victim = m.spawn("victim", "victim", SchedAttr(SchedPolicy.FIFO, rt_priority=50), [0])
    hog = m.spawn("hog", "hogs", NICE0, [0])
    m.spin(victim)
    m.spin(hog)
    env.run(until=0.5)
    assert m.rate(victim) == 1.0 and m.rate(hog) == 0.0
    m.set_attr(victim, SchedAttr(SchedPolicy.IDLE))
    assert victim.runnable
    assert m.rate(victim) == pytest.approx(3 / 1027)
    env.run(until=1.5)
    assert m.cpu_time(victim) == pytest.approx(0.5 + 3 / 1027, rel=1e-9)
    by_group = m.cpu_time_by_group()
    assert by_group["hogs"] == pytest.approx(1024 / 1027, rel=1e-9)
    assert sum(by_group.values()) == pytest.approx(1.5)

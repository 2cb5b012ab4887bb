"""Jiffy timers and the event budget: nothing may cost events while nothing changes."""

import pytest
import simpy

from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy

NICE0 = SchedAttr(SchedPolicy.NORMAL)


@pytest.mark.parametrize("t0, woke", [(0.0005, 0.001), (0.001, 0.002), (0.0, 0.001), (0.0019999, 0.002)])
def test_sleep_jiffies_wakes_on_next_tick(t0: float, woke: float) -> None:
    env = simpy.Environment()
    m = Machine(env, MachineSpec(cpus=1, hz=1000))
    th = m.spawn("t", "g", NICE0)
    out: list[float] = []

    def proc() -> simpy.events.ProcessGenerator:
        yield env.timeout(t0)
        m.spin(th)
        yield m.sleep_jiffies(th, 1)
        out.append(env.now)

    env.process(proc())
    env.run()
    assert out == [pytest.approx(woke, abs=1e-12)]
    assert not th.runnable


def test_next_tick_other_hz_and_n() -> None:
    m = Machine(simpy.Environment(), MachineSpec(cpus=1, hz=250))
    assert m.next_tick(0.0, 1) == pytest.approx(0.004)
    assert m.next_tick(0.004, 1) == pytest.approx(0.008)
    assert m.next_tick(0.005, 3) == pytest.approx(0.016)
    m100 = Machine(simpy.Environment(), MachineSpec(cpus=1, hz=100))
    assert m100.next_tick(0.3, 1) == pytest.approx(0.31)  # 0.3 * 100 is 30.000000000000004


def test_sleep_blocks_and_timer_fires() -> None:
    env = simpy.Environment()
    m = Machine(env, MachineSpec(cpus=1))
    th = m.spawn("t", "g", NICE0)
    m.spin(th)
    ev = m.sleep(th, 0.1)
    assert not th.runnable and m.rate(th) == 0.0
    env.run(until=ev)
    assert env.now == pytest.approx(0.1)
    assert m.cpu_time(th) == 0.0


def _events_for(env, horizon: float, **spec: object) -> int:
    m = Machine(env, MachineSpec(cpus=1, **spec))  # type: ignore[arg-type]
    rt = m.spawn("rt", "rt", SchedAttr(SchedPolicy.FIFO, rt_priority=99), [0])
    cfs = m.spawn("cfs", "g", NICE0, [0])
    m.spin(rt)
    m.spin(cfs)
    m.block(cfs)  # blocked forever
    env.run(until=horizon)
    assert m.cpu_time(rt) == pytest.approx(horizon)
    return env.scheduled


@pytest.mark.parametrize("spec", [{}, {"rt_runtime_share": False}, {"rt_runtime_us": -1}, {"preempt": "none"}])
def test_spinner_with_blocked_neighbour_costs_no_events_over_time(spec: dict[str, object], make_counting_env) -> None:
    envs = [make_counting_env(), make_counting_env()]
    assert _events_for(envs[0], 1200.0, **spec) <= _events_for(envs[1], 120.0, **spec)


def test_throttling_costs_a_bounded_number_of_events_per_period(counting_env) -> None:
    env = counting_env
    m = Machine(env, MachineSpec(cpus=1))
    rt = m.spawn("rt", "rt", SchedAttr(SchedPolicy.FIFO, rt_priority=99), [0])
    cfs = m.spawn("cfs", "g", NICE0, [0])
    m.spin(rt)
    m.spin(cfs)
    env.run(until=100.0)
    assert env.scheduled <= 2 * 100 + 5
    assert m.cpu_time(cfs) == pytest.approx(5.0, rel=1e-6)


def test_long_run_is_one_event(counting_env) -> None:
    env = counting_env
    m = Machine(env, MachineSpec(cpus=2))
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", SchedAttr(SchedPolicy.NORMAL, nice=19), [0])
    m.spin(b)
    ev = m.run(a, 1000.0, resched_every_s=0.001)
    env.run(until=ev)
    assert env.now == pytest.approx(1000.0 * 1039 / 1024, rel=1e-12)
    assert env.scheduled <= 3

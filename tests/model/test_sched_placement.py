"""Wake-up placement, push_rt_task() and load_balance() migrations; affinity is hard."""

import pytest
import simpy

from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy

NICE0 = SchedAttr(SchedPolicy.NORMAL)


def fifo(p: int) -> SchedAttr:
    return SchedAttr(SchedPolicy.FIFO, rt_priority=p)


def _machine(cpus: int, **kw: object) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    return env, Machine(env, MachineSpec(cpus=cpus, **kw))  # type: ignore[arg-type]


def test_cfs_wakes_on_idle_cpu_not_on_rt_busy_cpu() -> None:
    env, m = _machine(2)
    rt = m.spawn("rt", "rt", fifo(99), [0])
    m.spin(rt)
    cfs = m.spawn("cfs", "g", NICE0)
    m.spin(cfs)
    assert cfs.cpu == 1 and m.rate(cfs) == 1.0


def test_cfs_prefers_cpu_without_rt_and_least_weight() -> None:
    env, m = _machine(3)
    m.spin(m.spawn("rt", "rt", fifo(99), [0]))
    m.spin(m.spawn("heavy", "g", SchedAttr(SchedPolicy.NORMAL, nice=-5), [1]))
    m.spin(m.spawn("light", "g", SchedAttr(SchedPolicy.NORMAL, nice=5), [2]))
    th = m.spawn("new", "g", NICE0)
    m.spin(th)
    assert th.cpu == 2


def test_cfs_prefers_previous_cpu_when_idle() -> None:
    env, m = _machine(4)
    th = m.spawn("t", "g", NICE0, [1, 2, 3])
    m.spin(th)
    assert th.cpu == 1
    m.block(th)
    m.spin(m.spawn("other", "g", NICE0, [1]))
    m.spin(th)
    assert th.cpu == 2  # previous CPU busy -> lowest idle allowed CPU
    m.block(th)
    m.spin(th)
    assert th.cpu == 2


def test_rt_wakes_on_cpu_with_lowest_rt_priority() -> None:
    env, m = _machine(3)
    m.spin(m.spawn("a", "rt", fifo(80), [0]))
    m.spin(m.spawn("b", "rt", fifo(20), [1]))
    m.spin(m.spawn("c", "rt", fifo(40), [2]))
    th = m.spawn("t", "rt", fifo(50))
    m.spin(th)
    assert th.cpu == 1 and m.rate(th) == 1.0


def test_push_rt_moves_preempted_rt_thread_at_once() -> None:
    env, m = _machine(2)
    low = m.spawn("low", "rt", fifo(40))
    m.spin(low)
    assert low.cpu == 0
    m.spin(m.spawn("cfs1", "g", NICE0, [1]))
    high = m.spawn("high", "rt", fifo(50), [0])
    m.spin(high)
    assert low.cpu == 1 and m.rate(low) == 1.0 and m.rate(high) == 1.0
    m.check_invariants()


def test_push_rt_does_not_move_onto_equal_priority() -> None:
    env, m = _machine(2)
    low = m.spawn("low", "rt", fifo(50))
    m.spin(low)
    m.spin(m.spawn("busy1", "rt", fifo(50), [1]))
    m.spin(m.spawn("high", "rt", fifo(60), [0]))
    assert low.cpu == 0 and m.rate(low) == 0.0


def test_cfs_starved_by_rt_migrates_after_balance_interval() -> None:
    env, m = _machine(2, balance_interval_s=0.004)
    x = m.spawn("x", "g", NICE0)
    m.spin(x)
    assert x.cpu == 0
    y = m.spawn("y", "g", NICE0, [1])
    m.spin(y)
    env.run(until=1.0)
    m.spin(m.spawn("rt", "rt", fifo(99), [0]))
    assert m.rate(x) == 0.0
    env.run(until=1.0039)
    assert x.cpu == 0 and m.cpu_time(x) == pytest.approx(1.0)
    env.run(until=1.0041)
    assert x.cpu == 1 and m.rate(x) == pytest.approx(0.5) and m.rate(y) == pytest.approx(0.5)
    env.run(until=2.0041)
    assert m.cpu_time(x) == pytest.approx(1.0 + 0.5 * (2.0041 - 1.004), rel=1e-9)
    m.check_invariants()


def test_starved_thread_with_no_target_moves_when_a_cpu_frees_up(counting_env) -> None:
    env = counting_env
    m = Machine(env, MachineSpec(cpus=2, rt_runtime_us=-1, balance_interval_s=0.004))
    x = m.spawn("x", "g", NICE0)
    m.spin(x)
    rt0 = m.spawn("rt0", "rt", fifo(99), [0])
    rt1 = m.spawn("rt1", "rt", fifo(99), [1])
    m.spin(rt0)
    m.spin(rt1)
    env.run(until=1.0)
    assert m.cpu_time(x) == 0.0 and x.cpu == 0
    events_before = env.scheduled
    env.run(until=10.0)
    assert env.scheduled == events_before + 2  # run(until=)'s own two only: no polling while nowhere to go
    m.block(rt1)
    env.run(until=10.005)
    assert x.cpu == 1 and m.rate(x) == 1.0


def test_pinned_cfs_thread_stays_starved() -> None:
    env, m = _machine(2, rt_runtime_us=-1)
    x = m.spawn("x", "g", NICE0, [0])
    m.spin(x)
    m.spin(m.spawn("rt", "rt", fifo(99), [0]))
    env.run(until=5.0)
    assert x.cpu == 0 and m.cpu_time(x) == 0.0


def test_spawn_rejects_bad_affinity() -> None:
    env, m = _machine(2)
    with pytest.raises(ValueError):
        m.spawn("t", "g", NICE0, [2])
    with pytest.raises(ValueError):
        m.spawn("t", "g", NICE0, [])


def test_waiting_rt_thread_is_pulled_when_another_cpu_loses_its_rt_thread() -> None:
    env, m = _machine(2, rt_runtime_us=-1)
    busy1 = m.spawn("busy1", "rt", fifo(60), [1])
    m.spin(busy1)
    m.spin(m.spawn("busy0", "rt", fifo(60), [0]))
    waiting = m.spawn("waiting", "rt", fifo(50))
    m.spin(waiting)
    assert m.rate(waiting) == 0.0
    env.run(until=1.0)
    m.block(busy1)
    assert waiting.cpu == 1 and m.rate(waiting) == 1.0
    m.check_invariants()


def test_check_invariants_catches_corruption() -> None:
    env, m = _machine(2)
    th = m.spawn("t", "g", NICE0, [0])
    m.spin(th)
    m.check_invariants()
    th.allowed = (1,)
    with pytest.raises(AssertionError):
        m.check_invariants()
    th.allowed = (0,)
    th.rate = 1.5
    with pytest.raises(AssertionError):
        m.check_invariants()


def test_trace_records_segments_per_cpu() -> None:
    env = simpy.Environment()
    m = Machine(env, MachineSpec(cpus=2), trace=True)
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", NICE0, [0])
    m.spin(a)
    env.run(until=1.0)
    m.spin(b)
    env.run(until=2.0)
    m.block(a)
    env.run(until=3.0)
    m.flush_trace()
    assert m.trace == [
        ("a", 0, 0.0, 1.0, 1.0),
        ("a", 0, 1.0, 2.0, 0.5),
        ("b", 0, 1.0, 2.0, 0.5),
        ("b", 0, 2.0, 3.0, 1.0),
    ]

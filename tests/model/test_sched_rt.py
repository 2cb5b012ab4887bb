"""RT class: FIFO order, RR sharing, RT throttling (rt_runtime / RT_RUNTIME_SHARE), preemption models."""

import pytest
import simpy

from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy

NICE0 = SchedAttr(SchedPolicy.NORMAL)


def fifo(p: int) -> SchedAttr:
    return SchedAttr(SchedPolicy.FIFO, rt_priority=p)


def _machine(cpus: int = 1, **kw: object) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    return env, Machine(env, MachineSpec(cpus=cpus, **kw))  # type: ignore[arg-type]


def _fifo_vs_cfs(cpus: int, rt_everywhere: bool, **kw: object) -> float:
    """CPU time a CFS spinner gets over 10 s next to a FIFO spinner on CPU 0."""
    env, m = _machine(cpus, **kw)
    cfs = m.spawn("cfs", "g", NICE0, [0])
    rts = [m.spawn(f"rt{c}", "rt", fifo(99), [c]) for c in range(cpus if rt_everywhere else 1)]
    for th in rts:
        m.spin(th)
    m.spin(cfs)
    env.run(until=10.0)
    m.check_invariants()
    total = m.cpu_time(cfs) + m.cpu_time(rts[0])
    assert total == pytest.approx(10.0, rel=1e-9)  # CPU 0 never idles
    return m.cpu_time(cfs)


def test_fifo_starves_cfs_without_throttling() -> None:
    assert _fifo_vs_cfs(1, False, rt_runtime_us=-1) == 0.0


def test_throttling_leaves_cfs_five_percent_without_sharing() -> None:
    assert _fifo_vs_cfs(8, False, rt_runtime_share=False) == pytest.approx(0.5, abs=0.05)
    assert _fifo_vs_cfs(1, False) == pytest.approx(0.5, abs=1e-6)


def test_rt_runtime_share_borrows_from_rt_idle_cpus() -> None:
    # 0.95 + 7 * 0.95 / 8 > 1: the RT hog never throttles (4.19 default, ~100 % RT).
    assert _fifo_vs_cfs(8, False) == 0.0


def test_rt_runtime_share_has_nothing_to_borrow_when_all_cpus_run_rt() -> None:
    assert _fifo_vs_cfs(8, True) == pytest.approx(0.5, abs=0.05)


def test_throttle_window_is_at_the_end_of_each_period() -> None:
    env, m = _machine(1)
    rt = m.spawn("rt", "rt", fifo(50), [0])
    cfs = m.spawn("cfs", "g", NICE0, [0])
    m.spin(rt)
    m.spin(cfs)
    env.run(until=0.949)
    assert m.rate(rt) == 1.0 and m.cpu_time(cfs) == 0.0
    env.run(until=0.96)
    assert m.rate(rt) == 0.0 and m.rate(cfs) == 1.0
    assert m.cpu_time(cfs) == pytest.approx(0.01, abs=1e-9)
    env.run(until=1.01)
    assert m.rate(rt) == 1.0
    assert m.cpu_time(cfs) == pytest.approx(0.05, abs=1e-9)


def test_share_budget_follows_other_cpus_becoming_rt_busy() -> None:
    env, m = _machine(2)
    rt0 = m.spawn("rt0", "rt", fifo(50), [0])
    cfs = m.spawn("cfs", "g", NICE0, [0])
    rt1 = m.spawn("rt1", "rt", fifo(50), [1])
    m.spin(rt0)
    m.spin(cfs)
    # budget min(1, 0.95 + 0.475): never throttles while CPU 1 is RT-idle
    env.run(until=2.5)
    assert m.cpu_time(cfs) == 0.0
    m.spin(rt1)  # now the budget is 0.95 on both CPUs
    env.run(until=4.0)
    # rt_time of period [2, 3) already holds 0.5 s: throttled 2.95-3.0, then 3.95-4.0
    assert m.cpu_time(cfs) == pytest.approx(0.1, abs=1e-9)
    m.block(rt1)  # CPU 1 RT-idle again: borrowing resumes
    env.run(until=6.0)
    assert m.cpu_time(cfs) == pytest.approx(0.1, abs=1e-9)


def test_fifo_equal_priority_does_not_preempt() -> None:
    env, m = _machine(1)
    a = m.spawn("a", "rt", fifo(50), [0])
    b = m.spawn("b", "rt", fifo(50), [0])
    m.spin(a)
    env.run(until=0.1)
    m.spin(b)
    env.run(until=0.5)
    assert m.rate(a) == 1.0 and m.rate(b) == 0.0
    assert m.cpu_time(b) == 0.0
    # a blocks and wakes: tail of its priority, so b now keeps the CPU
    m.block(a)
    m.spin(a)
    assert m.rate(b) == 1.0 and m.rate(a) == 0.0


@pytest.mark.parametrize("preempt", ["full", "none", "voluntary"])
def test_higher_priority_wakeup_and_preemption_model(preempt: str) -> None:
    env, m = _machine(1, preempt=preempt, rt_runtime_us=-1)
    low = m.spawn("low", "rt", fifo(10), [0])
    high = m.spawn("high", "rt", fifo(90), [0])
    started: list[float] = []

    def low_proc() -> simpy.events.ProcessGenerator:
        yield m.run(low, 10.0, resched_every_s=0.01)

    def high_proc() -> simpy.events.ProcessGenerator:
        yield env.timeout(0.025)
        m.spin(high)
        while not m.is_running(high):
            yield env.timeout(0.0001)
        started.append(env.now)

    env.process(low_proc())
    env.process(high_proc())
    env.run(until=0.05)
    if preempt == "full":
        assert started == [pytest.approx(0.025)]
        assert m.cpu_time(high) == pytest.approx(0.025, abs=1e-9)
    else:
        # waits for low's next cond_resched() point: 0.03
        assert started[0] == pytest.approx(0.03, abs=1e-4)
        assert m.cpu_time(high) == pytest.approx(0.02, abs=1e-9)
        assert m.cpu_time(low) == pytest.approx(0.03, abs=1e-9)
    m.check_invariants()


def test_no_resched_points_means_immediate_preemption_even_under_none() -> None:
    env, m = _machine(1, preempt="none", rt_runtime_us=-1)
    low = m.spawn("low", "g", NICE0, [0])
    high = m.spawn("high", "rt", fifo(90), [0])
    m.spin(low)  # user-space spinning: no resched_every_s
    env.run(until=0.0123)
    m.spin(high)
    assert m.rate(high) == 1.0 and m.rate(low) == 0.0


def test_rt_wakeup_waits_for_cfs_thread_in_kernel_segment_under_none() -> None:
    env, m = _machine(1, preempt="none", rt_runtime_us=-1)
    victim = m.spawn("victim", "victim", NICE0, [0])
    rt = m.spawn("rt", "rt", fifo(50), [0])
    m.run(victim, 5.0, resched_every_s=0.004)
    env.run(until=0.001)
    m.spin(rt)
    assert m.rate(rt) == 0.0 and m.rate(victim) == 1.0
    env.run(until=0.0041)
    assert m.rate(rt) == 1.0 and m.rate(victim) == 0.0
    assert m.cpu_time(victim) == pytest.approx(0.004, abs=1e-12)


def test_cfs_wakeup_never_deferred_under_none() -> None:
    env, m = _machine(1, preempt="none")
    a = m.spawn("a", "g", NICE0, [0])
    b = m.spawn("b", "g", NICE0, [0])
    m.run(a, 5.0, resched_every_s=0.01)
    env.run(until=0.001)
    m.spin(b)
    assert m.rate(a) == pytest.approx(0.5) and m.rate(b) == pytest.approx(0.5)


def test_rr_equal_priority_shares_equally_and_fifo_above_rr() -> None:
    env, m = _machine(1, rt_runtime_us=-1)
    rr = [m.spawn(f"rr{i}", "rt", SchedAttr(SchedPolicy.RR, rt_priority=20), [0]) for i in range(3)]
    for th in rr:
        m.spin(th)
    assert [m.rate(t) for t in rr] == [pytest.approx(1 / 3)] * 3
    m.spin(rr[0], demand=0.1)
    assert m.rate(rr[0]) == pytest.approx(0.1)
    assert m.rate(rr[1]) == pytest.approx(0.45)
    top = m.spawn("top", "rt", fifo(21), [0])
    m.spin(top, demand=0.5)
    assert m.rate(top) == pytest.approx(0.5)
    assert m.rate(rr[0]) == pytest.approx(0.1)
    assert m.rate(rr[2]) == pytest.approx(0.2)
    m.check_invariants()


def test_deferral_counts_from_when_the_segment_thread_started_running() -> None:
    # victim's CFS share changes just before the RT wakeup: it was still running, so it is pinned.
    env, m = _machine(1, preempt="none", rt_runtime_us=-1)
    victim = m.spawn("victim", "victim", NICE0, [0])
    other = m.spawn("other", "g", NICE0, [0])
    rt = m.spawn("rt", "rt", fifo(50), [0])
    m.spin(other)
    m.run(victim, 5.0, resched_every_s=0.01)
    env.run(until=0.005)
    m.block(other)
    assert m.rate(victim) == 1.0
    m.spin(rt)
    assert m.rate(rt) == 0.0 and m.rate(victim) == 1.0
    env.run(until=0.0101)
    assert m.rate(rt) == 1.0 and m.rate(victim) == 0.0


def test_set_attr_requeue_order() -> None:
    env, m = _machine(1, rt_runtime_us=-1)
    a = m.spawn("a", "rt", fifo(50), [0])
    b = m.spawn("b", "rt", fifo(40), [0])
    m.spin(a)
    m.spin(b)
    # a drops to 40: head of the prio-40 queue, so it keeps running ahead of b
    m.set_attr(a, fifo(40))
    assert m.rate(a) == 1.0 and m.rate(b) == 0.0
    # b raised to 40 -> same attr as before? no: b raised from 30 to 40 goes to the tail
    m.set_attr(b, fifo(30))
    m.set_attr(b, fifo(40))
    assert m.rate(a) == 1.0 and m.rate(b) == 0.0
    # unchanged attr: no requeue
    m.set_attr(a, fifo(40))
    assert m.rate(a) == 1.0
    m.set_attr(b, fifo(41))
    assert m.rate(b) == 1.0 and m.rate(a) == 0.0


def test_rt_runtime_share_partial_borrowing_formula() -> None:
    # budget = 0.5 + 2 RT-idle CPUs * 0.5 / 4 = 0.75 s per 1 s period -> CFS gets 0.25 s per period
    env, m = _machine(4, rt_runtime_us=500000)
    m.spin(m.spawn("rt0", "rt", fifo(50), [0]))
    m.spin(m.spawn("rt1", "rt", fifo(50), [1]))
    cfs = m.spawn("cfs", "g", NICE0, [0])
    m.spin(cfs)
    env.run(until=4.0)
    assert m.cpu_time(cfs) == pytest.approx(1.0, abs=1e-9)


def test_pinned_thread_releases_cpu_when_its_run_completes() -> None:
    env, m = _machine(1, preempt="none", rt_runtime_us=-1)
    victim = m.spawn("victim", "victim", SchedAttr(SchedPolicy.IDLE), [0])
    rt = m.spawn("rt", "rt", fifo(1), [0])
    done = m.run(victim, 0.0015, resched_every_s=0.001)
    env.run(until=0.0012)
    m.spin(rt)
    assert m.rate(rt) == 0.0  # deferred to the victim's cond_resched() at 0.002 ...
    env.run(until=done)      # ... but its run ends first, at 0.0015: the end of a call is a point too
    assert env.now == pytest.approx(0.0015)
    env.run(until=0.0016)
    assert m.rate(victim) == 0.0 and m.rate(rt) == 1.0
    assert m.cpu_time(victim) == pytest.approx(0.0015, abs=1e-12)
    m.check_invariants()

"""Property tests: any sequence of scheduler calls keeps the run queues sane and CPU time conserved."""

from collections import defaultdict

import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy

ATTRS = st.one_of(
    st.builds(lambda p: SchedAttr(SchedPolicy.FIFO, rt_priority=p), st.sampled_from([1, 50, 99])),
    st.builds(lambda p: SchedAttr(SchedPolicy.RR, rt_priority=p), st.sampled_from([1, 50])),
    st.builds(lambda n: SchedAttr(SchedPolicy.NORMAL, nice=n), st.sampled_from([-20, 0, 19])),
    st.builds(lambda n: SchedAttr(SchedPolicy.BATCH, nice=n), st.sampled_from([0, 5])),
    st.just(SchedAttr(SchedPolicy.IDLE)),
)

SPECS = st.builds(
    MachineSpec,
    cpus=st.integers(1, 3),
    hz=st.sampled_from([100, 1000]),
    preempt=st.sampled_from(["none", "voluntary", "full"]),
    rt_runtime_us=st.sampled_from([-1, 950000, 2000]),
    rt_period_us=st.sampled_from([1000000, 10000]),
    rt_runtime_share=st.booleans(),
    balance_interval_s=st.sampled_from([0.004, 0.0005]),
)

OPS = st.sampled_from(["spawn", "run", "spin", "block", "set_attr", "sleep", "exit", "advance", "advance"])


def _assert_no_pushable_rt_left_waiting(m: Machine) -> None:
    """push_rt_task()/pull_rt_task(): a waiting RT thread never has an allowed CPU with lower RT only.

    Exempt: a throttled CPU, and a CPU whose current thread defers preemption (preempt=none pinning).
    """
    top = [0] * m.spec.cpus
    for th in m.threads:
        if th.runnable and th.is_rt:
            top[th.cpu] = max(top[th.cpu], th.prio)
    for th in m.threads:
        if not (th.runnable and th.is_rt and th.demand > 0.0 and m.rate(th) == 0.0):
            continue
        rq = m.rqs[th.cpu]
        if rq.throttled or rq.pinned:
            continue
        for c in th.allowed:
            assert c == th.cpu or top[c] >= th.prio, f"{th!r} waits on CPU {th.cpu} but CPU {c} has top RT {top[c]}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS, data=st.data())
def test_random_call_sequences_keep_invariants(spec: MachineSpec, data: st.DataObject) -> None:
    env = simpy.Environment()
    m = Machine(env, spec, trace=True)
    last_cpu_time: dict[int, float] = {}
    for _ in range(data.draw(st.integers(5, 40), label="steps")):
        op = data.draw(OPS, label="op")
        alive = [t for t in m.threads if not t.exited]
        if op == "spawn" or not alive:
            allowed = data.draw(st.one_of(st.none(), st.lists(st.integers(0, spec.cpus - 1), min_size=1,
                                                              max_size=spec.cpus, unique=True)), label="allowed")
            m.spawn(f"t{len(m.threads)}", data.draw(st.sampled_from(["a", "b"])), data.draw(ATTRS), allowed)
        elif op == "advance":
            dt = data.draw(st.sampled_from([0.0, 1e-4, 1e-3, 0.0123, 0.3, 1.7]), label="dt")
            if dt > 0.0:
                env.run(until=env.now + dt)
            while env.peek() == env.now:  # same-instant events only
                env.step()
        else:
            th = data.draw(st.sampled_from(alive), label="thread")
            resched = data.draw(st.sampled_from([None, 0.001, 0.0037]), label="resched")
            if op == "run":
                m.run(th, data.draw(st.sampled_from([0.0, 1e-4, 0.002, 0.05, 0.6])), resched)
            elif op == "spin":
                m.spin(th, data.draw(st.sampled_from([1.0, 0.25, 0.01])), resched)
            elif op == "block":
                m.block(th)
            elif op == "set_attr":
                m.set_attr(th, data.draw(ATTRS))
            elif op == "sleep":
                m.sleep_jiffies(th, data.draw(st.integers(1, 3)))
            else:
                m.exit(th)
        m.check_invariants()
        for th in m.threads:
            ct = m.cpu_time(th)
            assert ct >= last_cpu_time.get(th.tid, 0.0) - 1e-12, f"{th.name}: CPU time went backwards"
            last_cpu_time[th.tid] = ct
            if th.runnable:
                assert th.cpu in th.allowed
        _assert_no_pushable_rt_left_waiting(m)
        total = sum(last_cpu_time.values())
        assert total <= env.now * spec.cpus + 1e-9
    env.run(until=env.now + 0.5)
    m.check_invariants()
    m.flush_trace()

    # The trace agrees with the accounting, and never shows a thread outside its mask or on two CPUs.
    by_thread: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    per_cpu_events: dict[int, list[tuple[float, float]]] = defaultdict(list)
    names = {th.name: th for th in m.threads}
    for name, cpu, t0, t1, rate in m.trace:
        th = names[name]
        assert cpu in th.allowed, f"{name} ran on CPU {cpu}, allowed {th.allowed}"
        assert t1 > t0 and 0.0 < rate <= 1.0 + 1e-12
        by_thread[name].append((cpu, t0, t1, rate))
        per_cpu_events[cpu] += [(t0, rate), (t1, -rate)]
    for name, segs in by_thread.items():
        assert sum(r * (t1 - t0) for _, t0, t1, r in segs) == pytest.approx(m.cpu_time(names[name]), abs=1e-9)
        segs.sort(key=lambda s: s[1])
        for a, b in zip(segs, segs[1:]):
            assert b[1] >= a[2] - 1e-12, f"{name} on two CPUs (or twice) at once: {a} {b}"
    for cpu, evs in per_cpu_events.items():
        load = 0.0
        for _, d in sorted(evs, key=lambda e: (e[0], e[1])):
            load += d
            assert load <= 1.0 + 1e-9, f"CPU {cpu} over capacity"
    assert sum(m.cpu_time_by_group().values()) <= env.now * spec.cpus + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.sampled_from([-20, -5, 0, 3, 19, None]), min_size=1, max_size=6),
    demands=st.lists(st.sampled_from([1.0, 0.5, 0.05]), min_size=6, max_size=6),
)
def test_cfs_waterfill_is_work_conserving_and_weight_fair(weights: list[int | None], demands: list[float]) -> None:
    env = simpy.Environment()
    m = Machine(env, MachineSpec(cpus=1))
    ths = []
    for i, n in enumerate(weights):
        attr = SchedAttr(SchedPolicy.IDLE) if n is None else SchedAttr(SchedPolicy.NORMAL, nice=n)
        th = m.spawn(f"t{i}", "g", attr)
        m.spin(th, demands[i])
        ths.append(th)
    rates = [m.rate(t) for t in ths]
    assert sum(rates) == pytest.approx(min(1.0, sum(demands[: len(ths)])), abs=1e-9)
    for t, r in zip(ths, rates):
        assert r <= t.demand + 1e-12
    # Threads not capped by demand get CPU in proportion to weight.
    free = [(t, r) for t, r in zip(ths, rates) if r < t.demand - 1e-9]
    for (a, ra), (b, rb) in zip(free, free[1:]):
        assert ra / a.weight == pytest.approx(rb / b.weight, rel=1e-9)
    # and a capped thread has a share no larger than what the uncapped ones get per weight.
    if free:
        level = free[0][1] / free[0][0].weight
        for t, r in zip(ths, rates):
            assert r / t.weight <= level * (1 + 1e-9) or r >= t.demand - 1e-12

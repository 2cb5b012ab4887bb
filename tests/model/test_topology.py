"""Machine topology and select_task_rq_fair(): where a woken SCHED_NORMAL kthread runs first.

Kernel facts (kernel/sched/fair.c v4.19/v6.1): select_idle_sibling() searches only the LLC domain
of the target CPU; an idle prev_cpu wins wake_affine(); a busy target with no idle CPU in its LLC
keeps the wakee, which then waits there until load balancing pulls it.
"""

import math

import pytest
import simpy

from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy
from oommodel.sched.topology import Topology, select_idle_sibling, select_task_rq_fair, wake_affine

NICE0 = SchedAttr(SchedPolicy.NORMAL)
FIFO99 = SchedAttr(SchedPolicy.FIFO, rt_priority=99)
SHARED = Topology.preset("shared_llc", 8)
SPLIT = Topology.preset("core_per_socket", 8)
ALL8 = tuple(range(8))


def _state(busy: set[int], rt: set[int] = frozenset()) -> tuple[list[bool], list[float]]:
    idle = [c not in busy for c in range(8)]
    load = [math.inf if c in rt else (1024.0 if c in busy else 0.0) for c in range(8)]
    return idle, load


def test_presets_and_llc_spans() -> None:
    assert (SHARED.sockets, SHARED.cores_per_socket) == (1, 8)
    assert (SPLIT.sockets, SPLIT.cores_per_socket) == (8, 1)
    assert SHARED.cpus_share_cache(0, 7) and list(SHARED.llc_span(3)) == list(range(8))
    assert not SPLIT.cpus_share_cache(0, 1) and list(SPLIT.llc_span(3)) == [3]
    two = Topology(2, 4)
    assert two.cpus_share_cache(0, 3) and not two.cpus_share_cache(3, 4)
    assert list(two.llc_span(5)) == [4, 5, 6, 7]
    assert list(Topology(2, 4, llc="core").llc_span(5)) == [5]
    with pytest.raises(ValueError):
        Topology.preset("numa", 8)
    with pytest.raises(ValueError):
        Topology(1, 8, llc="l2")


def test_idle_prev_cpu_wins_wake_affine() -> None:
    idle, load = _state(busy={0}, rt={0})
    assert wake_affine(0, 3, idle, load, 1024, SPLIT) == 3
    assert wake_affine(0, 3, idle, load, 1024, SHARED) == 3


def test_idle_waker_sharing_the_cache_wins_over_a_busy_prev() -> None:
    idle, load = _state(busy={3})
    assert wake_affine(0, 3, idle, load, 1024, SHARED) == 0
    # no shared cache: wake_affine_weight(); the waker must be lighter with the wakee added
    assert wake_affine(0, 3, idle, load, 1024, SPLIT) == 3
    load[3] = 2048.0
    assert wake_affine(0, 3, idle, load, 1024, SPLIT) == 0


def test_rt_hogged_waker_never_wins_the_weight_comparison() -> None:
    idle, load = _state(busy={0, 3}, rt={0})
    assert wake_affine(0, 3, idle, load, 1024, SPLIT) == 3


def test_select_idle_sibling_searches_only_the_targets_llc() -> None:
    idle, _ = _state(busy={0})
    assert select_idle_sibling(0, 0, ALL8, idle, SHARED) == 1
    assert select_idle_sibling(0, 0, ALL8, idle, SPLIT) == 0      # its own LLC: stays, busy
    assert select_idle_sibling(0, 0, (0, 5, 6), idle, SHARED) == 5  # affinity is hard
    two = Topology(2, 4)
    idle2, _ = _state(busy={0, 1, 2, 3})
    assert select_idle_sibling(2, 2, ALL8, idle2, two) == 2       # the other socket is not searched


def test_reaper_woken_from_a_hogged_cpu_where_it_last_ran() -> None:
    idle, load = _state(busy={0}, rt={0})
    assert select_task_rq_fair(0, 0, ALL8, idle, load, 1024, SHARED) == 1
    assert select_task_rq_fair(0, 0, ALL8, idle, load, 1024, SPLIT) == 0
    # last ran elsewhere: back there at once, whatever the topology
    assert select_task_rq_fair(0, 4, ALL8, idle, load, 1024, SPLIT) == 4
    assert select_task_rq_fair(0, 4, ALL8, idle, load, 1024, SHARED) == 4


def _machine(topo: Topology) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    return env, Machine(env, MachineSpec(cpus=topo.cpus, topology=topo, balance_interval_s=0.004))


@pytest.mark.parametrize("topo, cpu, done_ms", [(SPLIT, 0, 5.0), (SHARED, 1, 1.0)])
def test_kthread_woken_from_a_fifo_hogged_cpu(topo: Topology, cpu: int, done_ms: float) -> None:
    """One core per socket: the kthread woken from CPU 0, hogged by FIFO children, where it last ran,
    waits there for load balancing (4 ms) before it gets 1 ms of CPU elsewhere. Shared LLC: it runs
    at once on an idle CPU."""
    env, m = _machine(topo)
    for i in range(3):
        m.spin(m.spawn(f"child{i}", "children", FIFO99, [0]))
    k = m.spawn("oom_reaper", "oom_reaper", NICE0, last_cpu=0)
    m.wake_up(k, 0)
    done = m.run(k, 1e-3)
    assert k.cpu == cpu
    env.run(until=done)
    assert env.now == pytest.approx(done_ms / 1e3)
    assert k.cpu != 0


def test_reaper_preempted_by_an_rt_thread_on_its_cpu_is_pulled_away() -> None:
    """RT beats CFS on a CPU at once (pick_next_task() class order); the starved kthread waits
    for load_balance() like any CFS thread."""
    env, m = _machine(SHARED)
    k = m.spawn("oom_reaper", "oom_reaper", NICE0, last_cpu=2)
    m.wake_up(k, 2)
    done = m.run(k, 2e-3)
    assert k.cpu == 2
    env.run(until=0.5e-3)
    rt = m.spawn("rt", "rt", FIFO99, [2])
    m.spin(rt)
    assert m.rate(k) == 0.0
    env.run(until=done)
    assert env.now == pytest.approx(0.5e-3 + 4e-3 + 1.5e-3)
    assert k.cpu != 2


def test_without_topology_the_simplified_rule_is_kept() -> None:
    env = simpy.Environment()
    m = Machine(env, MachineSpec(cpus=4))
    m.spin(m.spawn("rt", "rt", FIFO99, [0]))
    k = m.spawn("k", "g", NICE0, last_cpu=0)
    m.wake_up(k, 0)
    m.spin(k)
    assert k.cpu == 1


def test_cfs_starved_since_tracks_rt_monopoly() -> None:
    env, m = _machine(SHARED)
    assert m.cfs_starved_since(0) is None
    env.run(until=1.0)
    rt = m.spawn("rt", "rt", FIFO99, [0])
    m.spin(rt)
    assert m.cfs_starved_since(0) == 1.0
    env.run(until=2.0)
    m.block(rt)
    assert m.cfs_starved_since(0) is None


def test_spawn_refuses_a_last_cpu_outside_affinity() -> None:
    env, m = _machine(SHARED)
    with pytest.raises(ValueError):
        m.spawn("k", "g", NICE0, [1, 2], last_cpu=0)

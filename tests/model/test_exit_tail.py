"""The tail of do_exit() on v6.1 (real-kernel-6.1.md section 4): under preempt=full a killed
SCHED_FIFO task is requeued behind its peers by sched_move_task() after mmput() freed its
memory; the OOM killer and the allocators carry on without waiting for its exit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import simpy

from oommodel import POLICIES, Scenario, simulate
from oommodel.kernel.world import World
from oommodel.sched import Machine, MachineSpec, SchedAttr, SchedPolicy

HANDA_FULL = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "handa-preempt-full.yaml"
SEEDS = (1, 2, 3)


def handa(preempt: str) -> Scenario:
    d = Scenario.from_yaml(HANDA_FULL).to_dict()
    d["machine"]["preempt"] = preempt
    return Scenario.from_dict(d)


def run(sc: Scenario, policy: str, seed: int) -> World:
    world = World(sc, POLICIES[policy], {}, seed)
    world.outcome = world.run()  # type: ignore[attr-defined]
    return world


def longest_exit_gap(world: World) -> float:
    """Longest time with no victim exit, from the first kill to the last exit."""
    times = [world.state.stats.first_kill_s] + sorted(v.exit_time for v in world.state.victims if v.exit_time is not None)
    return max(b - a for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_fifo_children_wait_runnable_behind_their_peers_after_freeing_memory(seed):
    w = run(handa("full"), "upstream_6_1", seed)
    out = w.outcome
    assert out.kills == 64 and out.extra_kills == 0
    assert out.exits_pending_max >= 20                      # 29 seen on 6.1 under TCG
    assert out.exit_delay_max_s > 1.0
    assert longest_exit_gap(w) > 0.5                        # ~10 s under TCG (about 10x slow)
    for v in w.state.victims:                                     # every one exited in the end, memory first
        assert v.mmput_time is not None and v.exit_time is not None and v.mmput_time <= v.exit_time
    # waiting ones were runnable all along: no lockup, and the allocators kept going
    assert not out.lockup
    assert out.max_stall_s < 0.5
    assert out.memory_freed_mb == pytest.approx(64 * 100, rel=0.01)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_oom_killer_moves_on_while_earlier_victims_wait_to_exit(seed):
    # oom_evaluate_task(): a victim with MMF_OOM_SKIP (set in exit_mmap) is skipped, and one past
    # exit_mm() has no mm (find_lock_task_mm() fails), so new victims are chosen while it waits.
    w = run(handa("full"), "upstream_6_1", seed)
    waiting_at_kill = [
        sum(1 for u in w.state.victims if u is not v and u.mmput_time is not None and u.mmput_time < v.kill_time
            and (u.exit_time is None or u.exit_time > v.kill_time))
        for v in w.state.victims
    ]
    assert max(waiting_at_kill) >= 20
    assert w.outcome.victims_pending_at_end == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_voluntary_preemption_lets_a_killed_child_exit_at_once(seed):
    w = run(handa("voluntary"), "upstream_6_1", seed)
    out = w.outcome
    assert out.kills == 64 and not out.lockup
    assert out.exits_pending_max == 0                       # exit in the instant of mmput(): no wait
    assert out.exit_delay_max_s == 0.0                      # do_task_dead() right after mmput(), as before
    assert longest_exit_gap(w) < 0.2                        # "exits within tens of milliseconds"


@pytest.mark.parametrize("seed", SEEDS)
def test_oom_progress_does_not_wait_for_exits(seed):
    # Progress is memory freed and charges satisfied: the same under both preemption models.
    full = simulate(handa("full"), "upstream_6_1", seed)
    vol = simulate(handa("voluntary"), "upstream_6_1", seed)
    assert full.exits_pending_max > 10 * max(1, vol.exits_pending_max)
    assert full.kills == vol.kills and full.lockup == vol.lockup
    assert full.memory_freed_mb == pytest.approx(vol.memory_freed_mb)
    assert full.max_stall_s == pytest.approx(vol.max_stall_s, abs=1e-3)
    assert full.first_kill_s == pytest.approx(vol.first_kill_s)
    assert full.first_progress_s == pytest.approx(vol.first_progress_s, abs=1e-3)


def test_v4_19_kernels_do_not_preempt_there():
    # sched_move_task() gained resched_curr() in v5.6 (2a4b03ffc69f): a 4.19 task runs on to do_task_dead().
    out = simulate(handa("full"), "upstream_4_19", 1)
    assert out.kills == 64 and out.exits_pending_max == 0 and out.exit_delay_max_s == 0.0


HOG_AHEAD = {
    "lockup_after_s": 5,
    "machine": {"cpus": 2, "hz": 250, "preempt": "full", "rt_runtime_us": -1},
    "oom": {"domain": "memcg", "limit_mb": 100},
    "groups": [
        {"name": "app", "count": 1, "role": "allocator", "rss_mb": 200, "cpus": [0],
         "sched": {"policy": "fifo", "rt_priority": 50}, "oom_score_adj": 1000},
        {"name": "hog", "count": 1, "role": "hog", "rss_mb": 0, "cpus": [0], "start_s": 0.01,
         "sched": {"policy": "fifo", "rt_priority": 50}, "oom_score_adj": -1000},
    ],
}


def test_a_waiting_victim_costs_no_events_and_counts_to_the_end_of_the_run():
    # The killed app frees its memory, is requeued behind a FIFO hog of its priority and never
    # runs again: runnable, not a lockup (nobody waits for memory), no events while it waits.
    outs = []
    for horizon in (10, 100):
        d = copy.deepcopy(HOG_AHEAD)
        d["horizon_s"] = horizon
        outs.append(simulate(d, "upstream_6_1", 1))
    short, long = outs
    assert short.kills == long.kills == 1 and not long.lockup
    assert short.memory_freed_mb == long.memory_freed_mb > 99
    assert short.exits_pending_max == long.exits_pending_max == 1
    assert short.exit_delay_max_s == pytest.approx(10 - 0.025, abs=0.02)
    assert long.exit_delay_max_s == pytest.approx(100 - 0.025, abs=0.02)
    assert long.sim_events - short.sim_events <= 2           # the horizon timers, nothing per tick
    d = copy.deepcopy(HOG_AHEAD)
    d["horizon_s"] = 10
    d["machine"]["preempt"] = "voluntary"
    vol = simulate(d, "upstream_6_1", 1)
    assert vol.exit_delay_max_s == 0.0


def fifo(p: int) -> SchedAttr:
    return SchedAttr(SchedPolicy.FIFO, rt_priority=p)


def test_requeue_tail_puts_a_running_fifo_thread_behind_its_equal_priority_peers():
    env = simpy.Environment()
    m = Machine(env, MachineSpec(cpus=1))
    a, b, c = (m.spawn(n, "g", fifo(50), [0]) for n in "abc")
    hi = m.spawn("hi", "g", fifo(60), [0])
    for th in (a, b, c):
        m.spin(th)
    env.run(until=1.0)
    assert (m.rate(a), m.rate(b), m.rate(c)) == (1.0, 0.0, 0.0)
    m.requeue_tail(a)
    assert (m.rate(a), m.rate(b), m.rate(c)) == (0.0, 1.0, 0.0)
    m.block(b)
    assert (m.rate(a), m.rate(c)) == (0.0, 1.0)             # c was ahead of a now
    m.requeue_tail(hi)                                      # not runnable: nothing happens
    m.block(c)
    assert m.rate(a) == 1.0
    m.check_invariants()


def test_the_5_10_base_requeues_a_dying_fifo_task_like_6_1():
    # 5.10's sched_move_task() already ends in resched_curr(): Debian's 5.10.223 waits at exit too.
    out = simulate(handa("full"), "upstream_5_10", 1)
    assert out.kills == 64 and out.exits_pending_max >= 1 and out.exit_delay_max_s > 0.0
    assert simulate(handa("voluntary"), "upstream_5_10", 1).exits_pending_max == 0

"""Kernel functions on a bare RunState: no World, no workload, no run.

A RunState is plain data, so a test builds just the pieces a function reads and calls it.
"""

from __future__ import annotations

import simpy

from oommodel import POLICIES, Scenario
from oommodel.detector import AllocatorStallDetector
from oommodel.kernel.config import RunConfig
from oommodel.kernel.costs import RunCosts
from oommodel.kernel.locks import Mutex
from oommodel.kernel.mm import MMF, Mm
from oommodel.kernel.oom_domain import OomDomain
from oommodel.kernel.oom_kill import mark_oom_victim, pending_victims, select_bad_process
from oommodel.kernel.oom_reaper import wake_oom_reaper
from oommodel.kernel.oom_victim import set_mmf_oom_skip
from oommodel.kernel.page_alloc import alloc_slowpath
from oommodel.kernel.state import ReaperState, RunState, SkipRecord, SoftirqState
from oommodel.kernel.task import Process
from oommodel.outcome import LockupReason, SkipBy
from oommodel.sched import Machine, SchedAttr, SchedPolicy
from oommodel.streams import Streams

SC = Scenario.from_dict({"oom": {"domain": "memcg", "limit_mb": 1000},
                         "groups": [{"name": "a", "count": 1, "role": "allocator"}]})
NICE0 = SchedAttr(SchedPolicy.NORMAL)


def bare_state(policy: str = "upstream_4_19", **opts: object) -> RunState:
    pol = POLICIES[policy]
    cfg = RunConfig.build(SC, pol, pol.check_options(opts))
    env = simpy.Environment()
    streams = Streams(0)
    state = RunState(
        env=env, cfg=cfg, policy=pol, streams=streams, machine=Machine(env, cfg.machine),
        costs=RunCosts.draw(SC.costs, SC.victim, streams), domain=OomDomain(env, "memcg", 1000.0),
        slowpath=alloc_slowpath, oom_lock=Mutex(env, "oom_lock"),
        softirq=SoftirqState(defer=False, awake_p=0.0), stop=env.event(),
    )
    state.detector = AllocatorStallDetector(env, cfg.lockup_after_s, lambda: (LockupReason.NO_PROGRESS, ""))
    state.reaper = None
    return state


def proc(state: RunState, pid: int, mb: float, adj: int = 0) -> Process:
    mm = Mm(state.env, pid, 1, (1.0, 0.0, 0.0), 0.0)
    mm.touch(mb)
    p = Process(state.env, pid, "g", "allocator", adj, NICE0, None, mm)
    p.threads.append(state.machine.spawn(f"g/{pid}.0", "g", NICE0))
    state.procs.append(p)
    state.scan_order.append(p)
    return p


def test_select_bad_process_takes_the_first_largest_eligible_task() -> None:
    s = bare_state()
    small, big, twin, unkillable, skipped = (proc(s, 1, 100), proc(s, 2, 300), proc(s, 3, 300),
                                             proc(s, 4, 900, adj=-1000), proc(s, 5, 800))
    skipped.mm.flags |= MMF.MMF_OOM_SKIP
    assert select_bad_process(s) is big                    # first maximum in scan order wins
    big.mm_gone = True                                     # past exit_mm(): find_lock_task_mm() fails
    assert select_bad_process(s) is twin
    twin.mm_gone = True
    assert select_bad_process(s) is small
    assert unkillable is not None


def test_oom_score_adj_shifts_badness_by_a_share_of_the_limit() -> None:
    s = bare_state()
    proc(s, 1, 300)
    favoured = proc(s, 2, 100, adj=300)                    # +300/1000 of 1000 MB = +300 MB
    assert select_bad_process(s) is favoured


def test_mmf_oom_skip_is_logged_once_and_releases_the_victim_on_4_19() -> None:
    s = bare_state()
    v = proc(s, 1, 100)
    mark_oom_victim(s, v)
    set_mmf_oom_skip(s, v, SkipBy.REAPER)
    set_mmf_oom_skip(s, v, SkipBy.EXIT)
    assert s.skip_log == [SkipRecord(1, SkipBy.REAPER, 0.0)]
    assert v.released_by is SkipBy.REAPER and s.stats.first_skip_by is SkipBy.REAPER
    assert pending_victims(s) == ([], None)


def test_handa_victim_list_keeps_a_victim_with_mmf_oom_skip_pending_until_its_score_stalls() -> None:
    s = bare_state("stall_backoff", stall_s=3.0)
    v = proc(s, 1, 100)
    mark_oom_victim(s, v)
    set_mmf_oom_skip(s, v, SkipBy.REAPER)
    assert v.released_by is None
    assert pending_victims(s) == ([v], 3.0)
    s.env.run(until=3.0)
    assert pending_victims(s) == ([], None)
    assert v.released_by is SkipBy.TIMEOUT


def test_wake_oom_reaper_queues_each_victim_once_and_wakes_the_kthread() -> None:
    s = bare_state()
    s.reaper = ReaperState(th=s.machine.spawn("oom_reaper", "oom_reaper", NICE0), wake=s.env.event())
    a, b = proc(s, 1, 10), proc(s, 2, 10)
    wake_oom_reaper(s, a)
    wake_oom_reaper(s, b)
    wake_oom_reaper(s, a)
    assert s.reaper.queue == [a, b] and s.reaper.wake.triggered
    assert s.reaper.queue.pop() is b                       # LIFO, as the oom_reaper takes them

"""Allocating threads: user space faulting memory in, and the global allocator slow path.

`touch_memory` stands for a process writing to freshly mmapped anonymous memory: each
page fault allocates and charges one page. The model faults memory in slices (a slice
never overshoots the domain's headroom shared among the CPUs currently faulting), so the
number of events per process is small while the limit is still reached at the right time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from oommodel.kernel.costs import MAX_RECLAIM_RETRIES, MIN_TOUCH_CHUNK_MB
from oommodel.kernel.oom_domain import EPS_MB
from oommodel.kernel.accounting import note_alloc_after_wait
from oommodel.kernel.oom_kill import OomResult, out_of_memory, panic

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process
    from oommodel.sched import Thread


def touch_memory(state: RunState, proc: Process, th: Thread, target_mb: float):
    """The process's own loop: fault in `target_mb`, entering the slow path at the limit."""
    dom = state.domain
    machine = state.machine
    per_mb = state.costs.touch_s_per_mb
    remaining = target_mb
    force = False
    while remaining > EPS_MB and not proc.killed:
        if dom is not None and not force and dom.headroom() <= EPS_MB:
            force = yield from state.slowpath(state, proc, th)
            continue
        chunk = remaining
        if dom is not None and not force:
            # CPUs faulting memory in right now share the headroom (threads on one CPU share its rate)
            cpus = {t.cpu for t in state.touching if t.rate > 0.0}
            cpus.add(th.cpu)
            chunk = min(remaining, max(MIN_TOUCH_CHUNK_MB, dom.headroom() / len(cpus)))
        if per_mb > 0.0:
            t0 = machine.cpu_time(th)
            done = machine.run(th, chunk * per_mb)
            state.touching.append(th)
            finished = yield done                       # False: SIGKILL cut the faults short
            state.touching.remove(th)
            if finished is False:
                chunk = min(chunk, (machine.cpu_time(th) - t0) / per_mb)
        if dom is not None:
            granted = dom.charge(chunk, force=force or proc.killed)
            if granted > EPS_MB and not force and not proc.killed:
                state.detector.progress()
        else:
            granted = chunk
        force = False
        proc.mm.touch(granted)
        remaining -= granted


def spin_until_change(state: RunState, proc: Process, th: Thread, seen: int, deadline: float | None = None,
                      demand: float = 1.0):
    """Busy-retry in the allocator until something it could observe changes.

    Stands for the retry loop with no sleep (`goto retry` after out_of_memory() returned
    true): the thread keeps its CPU (`cond_resched()` is a no-op under CONFIG_PREEMPT and
    never yields to a lower priority otherwise) and costs no event per pass. `seen` is the
    domain's change counter when the thread last looked: a change since then (say, memory
    freed while it was inside out_of_memory()) means it goes round again without sleeping.
    """
    if state.domain.version != seen or proc.killed:
        return
    env = state.env
    state.machine.spin(th, demand=demand, resched_every_s=state.costs.alloc_loop_s)
    events = [state.domain.changed, proc.kill_event]
    if deadline is not None:
        events.append(env.timeout(max(0.0, deadline - env.now)))
    yield simpy.AnyOf(env, events)


def alloc_slowpath(state: RunState, proc: Process, th: Thread):
    """Models mm/page_alloc.c:__alloc_pages_slowpath() for an order-0 GFP_KERNEL allocation, v4.19.

    Returns True when the caller may take the page regardless of the watermark (an OOM
    victim with ALLOC_OOM access to the reserves), False when memory is there to take.
    """
    dom = state.domain
    machine = state.machine
    c = state.costs
    hz = state.cfg.hz
    state.detector.wait_start()
    try:
        while True:
            if proc.killed:
                return True                     # TIF_MEMDIE: __gfp_pfmemalloc_flags() -> ALLOC_OOM
            seen = dom.version
            # S1-S3: direct reclaim passes until no_progress_loops > MAX_RECLAIM_RETRIES
            passes = MAX_RECLAIM_RETRIES + 1
            # a pending SIGKILL is only seen after the reclaim passes
            yield machine.run(th, passes * c.alloc_loop_s, resched_every_s=c.alloc_loop_s)
            if proc.killed:
                return True
            if dom.headroom() > EPS_MB:
                note_alloc_after_wait(state)
                return False
            # S4: __alloc_pages_may_oom()
            if not state.oom_lock.trylock(th):
                if state.oom_lock.long_hold:
                    # schedule_timeout_uninterruptible(1) between passes, as a duty cycle
                    pass_s = passes * c.alloc_loop_s
                    duty = pass_s / (pass_s + 1.0 / hz)
                    yield from spin_until_change(state, proc, th, seen, demand=duty)
                else:
                    yield machine.sleep_jiffies(th, 1)
                continue
            result = yield from out_of_memory(state, proc, th)
            state.oom_lock.unlock(th)
            if result.kind is OomResult.NO_VICTIM:
                panic(state)
                yield state.env.event()          # the machine is gone
            if result.kind is OomResult.PENDING:
                yield from spin_until_change(state, proc, th, seen, deadline=result.deadline)
            # KILLED: retry at once (no sleep after a kill since 9bfe5ded054b, v4.19)
    finally:
        state.detector.wait_end()

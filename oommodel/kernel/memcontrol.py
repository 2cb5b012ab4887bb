"""The memcg charge path at the limit (reference section 1.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.kernel.costs import MEM_CGROUP_RECLAIM_RETRIES
from oommodel.kernel.oom_domain import EPS_MB
from oommodel.kernel.accounting import note_alloc_after_wait
from oommodel.kernel.oom_kill import OomResult, out_of_memory
from oommodel.kernel.page_alloc import spin_until_change

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process
    from oommodel.sched import Thread


def try_charge_slowpath(state: RunState, proc: Process, th: Thread):
    """Models mm/memcontrol.c:try_charge() -> mem_cgroup_oom() -> mem_cgroup_out_of_memory(), v4.19.

    No sleep anywhere: a thread only leaves the CPU when it blocks on `mutex_lock(&oom_lock)`
    (plain in 4.19/4.20, killable from 5.1). Returns True when the charge is forced (the
    task is dying, or the OOM killer found nothing to kill), False when it fits.
    """
    dom = state.domain
    machine = state.machine
    c = state.costs
    lock = state.oom_lock
    killable = state.policy.memcg_oom_lock_killable
    state.detector.wait_start()
    try:
        while True:
            if proc.killed:
                return True                     # fatal_signal_pending / tsk_is_oom_victim: goto force
            seen = dom.version
            # a pending SIGKILL is only seen after the reclaim passes
            yield machine.run(th, MEM_CGROUP_RECLAIM_RETRIES * c.alloc_loop_s, resched_every_s=c.alloc_loop_s)
            if proc.killed:
                return True
            if dom.headroom() > EPS_MB:
                note_alloc_after_wait(state)
                return False
            if not lock.trylock(th):            # mutex_lock() fast path: uncontended, no event
                got = lock.lock(th)
                machine.block(th)               # mutex_lock() sleeps: the CPU is free for others
                if killable:
                    yield got | proc.kill_event
                    if not got.triggered:
                        lock.cancel(th)
                        return True
                else:
                    yield got
            if killable and dom.headroom() > EPS_MB:
                lock.unlock(th)                 # 6.x re-checks the margin under oom_lock
                continue
            result = yield from out_of_memory(state, proc, th)
            lock.unlock(th)
            if result.kind is OomResult.NO_VICTIM:
                return True                     # OOM_FAILED: force the charge
            if result.kind is OomResult.PENDING:
                yield from spin_until_change(state, proc, th, seen, deadline=result.deadline)
            # KILLED (or PENDING resolved): nr_retries = MEM_CGROUP_RECLAIM_RETRIES; goto retry
    finally:
        state.detector.wait_end()

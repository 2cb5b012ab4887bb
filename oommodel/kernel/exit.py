"""The victim's exit path: `do_exit()` -> `exit_mm()` -> `mmput()` -> `exit_mmap()`, then the
rest of `do_exit()` up to `do_task_dead()`.

`exit_mmap` interprets the policy's list of `ExitStep`s (oommodel/policies/), so each
variant's ordering of unmap, `mm->mmap = NULL`, page-table freeing, `->close()` and
`MMF_OOM_SKIP` is data that can be read next to the kernel source (reference section 1.5).
`do_exit_tail` is the part after `exit_mm()`, where a v6.1 task can lose its CPU once more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.kernel.costs import DO_EXIT_TAIL_S, MB_PER_GB, MMU_GATHER_MAX_MB, UNLINK_VMAS_S, ZAP_RESCHED_S
from oommodel.kernel.accounting import free_memory, free_pgtables, note_mmput, note_thread_exit
from oommodel.kernel.mm import MMF
from oommodel.kernel.oom_domain import EPS_MB
from oommodel.kernel.oom_victim import release_victim, set_mmf_oom_skip
from oommodel.outcome import SkipBy
from oommodel.policies.base import Op, Phase

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process
    from oommodel.sched import Thread

# The Enum members compared on every exit step, bound once as module globals (the same objects:
# `op is _WORK` is `op is Op.WORK`). In CPython 3.11 looking a member up on its Enum class costs
# ~0.2 us -- EnumType defines __getattr__, which puts every attribute lookup on the class on the
# slow path -- and exit_mmap() + exit_phase() compared ~110 of them per exit.
(_WORK, _SET_SKIP, _SET_UNSTABLE, _DOWN_READ, _UP_READ, _DOWN_WRITE, _UP_WRITE, _OOM_LOCK, _OOM_UNLOCK,
 _CLEAR_MMAP, _PRIORITY_INJECTION) = (
    Op.WORK, Op.SET_SKIP, Op.SET_UNSTABLE, Op.DOWN_READ, Op.UP_READ, Op.DOWN_WRITE, Op.UP_WRITE, Op.OOM_LOCK,
    Op.OOM_UNLOCK, Op.CLEAR_MMAP, Op.PRIORITY_INJECTION)
(_SELF_REAP, _MUNLOCK, _UNMAP_VMAS, _UNLINK_VMAS, _FREE_PGTABLES, _TLB_FINISH_MMU, _REMOVE_VMA) = (
    Phase.SELF_REAP, Phase.MUNLOCK, Phase.UNMAP_VMAS, Phase.UNLINK_VMAS, Phase.FREE_PGTABLES,
    Phase.TLB_FINISH_MMU, Phase.REMOVE_VMA)
_SKIP_BY_EXIT = SkipBy.EXIT


def do_exit(state: RunState, proc: Process, th: Thread):
    """Models kernel/exit.c:do_exit() -> exit_mm() as of v4.19: the last user runs __mmput()."""
    machine = state.machine
    if proc.writer_hold_s > 0.0 and th is proc.threads[0]:
        # killed inside a syscall that holds mmap_sem for write (e.g. munlock): finish it first
        hold, proc.writer_hold_s = proc.writer_hold_s, 0.0
        yield machine.run(th, hold)
        proc.mm.mmap_sem.up_write(th)
    if state.costs.exit_s > 0.0:
        yield machine.run(th, state.costs.exit_s)
    proc.mm.users -= 1
    if proc.mm.users == 0:
        proc.mm_gone = True
        yield from exit_mmap(state, proc, th)
        proc.mmput_done = True
        proc.exit_phase = "exited"
        note_mmput(state, proc)
        if proc.in_victim_list:
            release_victim(state, proc, SkipBy.EXIT)           # Handa's exit_oom_mm() at the end of __mmput
    yield from do_exit_tail(state, proc, th)
    machine.exit(th)
    note_thread_exit(state, proc)


def do_exit_tail(state: RunState, proc: Process, th: Thread):
    """Models kernel/exit.c:do_exit() after exit_mm() as of v6.1: exit_sem() .. exit_task_work(),
    perf_event_exit_task(), sched_autogroup_exit_task(), cgroup_exit(), exit_notify() .. do_task_dead().

    With CONFIG_SCHED_AUTOGROUP (Debian's config), `sched_autogroup_exit_task()` calls
    `sched_move_task()` (kernel/sched/core.c) for every exiting task, whether autogroup is enabled
    or not: `dequeue_task()` + `enqueue_task()` with DEQUEUE_SAVE |
    DEQUEUE_MOVE, which `rt.c:enqueue_rt_entity()` turns into `list_add_tail()` -- the running task
    goes to the *tail* of its priority -- and, since 2a4b03ffc69f (v5.6), `resched_curr()`:

        preempt=full                                 preempt=none / voluntary
        ------------                                 ------------------------
        task_rq_unlock() -> preempt_enable():        TIF_NEED_RESCHED set, but no cond_resched()
          __schedule(SM_PREEMPT) picks the head        point follows on this path: cgroup_exit(),
          of the FIFO list, another task             exit_notify() .. do_task_dead() run at once
        the dying task waits runnable behind every   (nothing changes: its cost is in exit_ms)
          runnable task of its priority, its memory
          already freed by mmput()

    real-kernel-6.1.md section 4. v4.19 has the requeue but no resched_curr(); v6.4 to v6.13 skip
    the move when the task group is unchanged (eff6c8ce8d4d, reverted by 76f970ce51c8), so the
    policy says whether its kernel does this (`OomPolicy.exit_sched_move_resched`). Approximations:
    no other preemption point is modelled in this part of do_exit(), and after the preemption the
    task needs `DO_EXIT_TAIL_S` of CPU to finish; the OOM killer already skips it (no mm).
    """
    if not state.cfg.exit_requeue:
        return
    machine = state.machine
    if proc.mmput_done:
        proc.exit_phase = "do_exit: preempted in sched_move_task(), runnable at the tail of its priority"
    machine.requeue_tail(th)
    yield machine.run(th, DO_EXIT_TAIL_S)
    if proc.mmput_done:
        proc.exit_phase = "exited"


def exit_mmap(state: RunState, proc: Process, th: Thread):
    """Models mm/mmap.c:exit_mmap(); the order of steps is the policy's."""
    machine = state.machine
    mm = proc.mm
    sem = mm.mmap_sem
    victim = proc.oom_victim
    for s in state.cfg.exit_steps:
        if s.victim_only and not victim:
            continue
        op = s.op
        if op is _WORK:
            yield from exit_phase(state, proc, th, s.phase)
        elif op is _SET_SKIP:
            set_mmf_oom_skip(state, proc, _SKIP_BY_EXIT)
        elif op is _SET_UNSTABLE:
            mm.flags |= MMF.MMF_UNSTABLE
        elif op is _DOWN_READ:
            if not sem.down_read_trylock(th):          # uncontended: taken at once, no event
                got = sem.down_read(th)
                machine.block(th)
                yield got
        elif op is _UP_READ:
            sem.up_read(th)
        elif op is _DOWN_WRITE:
            if not sem.down_write_trylock(th):
                got = sem.down_write(th)
                machine.block(th)
                yield got
        elif op is _UP_WRITE:
            sem.up_write(th)
        elif op is _OOM_LOCK:
            if not state.oom_lock.trylock(th):
                got = state.oom_lock.lock(th)
                machine.block(th)
                yield got
            state.oom_lock.long_hold = True
            if state.domain is not None:
                state.domain.notify()                    # spinning allocators now meet a held lock
        elif op is _OOM_UNLOCK:
            state.oom_lock.unlock(th)
            if state.domain is not None:
                state.domain.notify()
        elif op is _CLEAR_MMAP:
            mm.mmap_cleared = True
            proc.exit_phase = "handed-over point (mm->mmap = NULL)"
        elif op is _PRIORITY_INJECTION:
            if victim:
                text = state.streams.draw(state.cfg.sched_at_handover, "sched_at_handover", proc.pid)
                if text != "unchanged":
                    machine.set_attr(th, state.cfg.handover_attrs[str(text)])




def exit_phase(state: RunState, proc: Process, th: Thread, phase: Phase):
    """CPU work of one exit_mmap phase, and what it frees."""
    machine = state.machine
    mm = proc.mm
    c = state.costs
    proc.exit_phase = phase._value_      # Enum.value is a Python-level property
    if phase is _SELF_REAP:
        amount = mm.reapable_mb(state.policy.reaper_reaps_mlocked)
        if amount > 0.0 and c.unmap_s_per_mb > 0.0:
            yield machine.run(th, amount * c.unmap_s_per_mb, resched_every_s=ZAP_RESCHED_S)
        free_memory(state, proc, mm.reap(state.policy.reaper_reaps_mlocked))
    elif phase is _MUNLOCK:
        if mm.mlocked_mb > 0.0 and c.unmap_s_per_mb > 0.0:
            yield machine.run(th, mm.mlocked_mb * c.unmap_s_per_mb, resched_every_s=ZAP_RESCHED_S)
    elif phase is _UNMAP_VMAS:
        while mm.rss_mb > 0.0 and c.unmap_s_per_mb > 0.0:
            work = mm.rss_mb * c.unmap_s_per_mb
            mm.zap = (th, machine.cpu_time(th), work, mm.rss_mb)
            done = yield machine.run(th, work, resched_every_s=ZAP_RESCHED_S)
            if done is not False:
                break
            # cut short (False) by an oom_reaper that joined the zap and took its share of what
            # was left (reaper.shared_zap, oom_reaper.py:share_zap): zap the rest
        mm.zap = None
        tlb_gather(state, proc, mm.unmap_all())
    elif phase is _UNLINK_VMAS:
        yield machine.run(th, UNLINK_VMAS_S)
    elif phase is _FREE_PGTABLES:
        cost = mm.mapped_mb * c.free_pgtables_s_per_mb
        if cost > 0.0:
            yield machine.run(th, cost, resched_every_s=ZAP_RESCHED_S)
        free_pgtables(state, proc, mm.free_pgtables())
    elif phase is _TLB_FINISH_MMU:
        tlb_finish_mmu(state, proc)
    elif phase is _REMOVE_VMA:
        yield from remove_vma_loop(state, proc, th)


def tlb_gather(state: RunState, proc: Process, mb: float) -> None:
    """Pages the exit path's `unmap_vmas()` zapped go into its `struct mmu_gather` (mm/mmu_gather.c,
    v4.19 .. v6.1): unmapped -- gone from the RSS counters and from `oom_badness()` -- but not freed,
    so still charged to the memcg, until the gather is full (`MMU_GATHER_MAX_MB`, 9698 pages: then
    `zap_pte_range()` calls `tlb_flush_mmu()`, which frees them all) or `tlb_finish_mmu()` ends the
    exit path's teardown. In RFC v2 the handover point (and Handa's priority hack) lies between
    `unmap_vmas()` and `tlb_finish_mmu()`, so a victim starved there holds up to ~38 MB of charged
    pages that no task's badness shows: the 5.10 boots' victims of 77088 kB and 39600 kB (the
    limit less one or two such gathers) come from it. The oom_reaper and v4.19's self-reap use
    their own gather and finish it at once (`__oom_reap_task_mm()`): their pages are freed there.
    """
    if mb <= 0.0:
        return
    mm = proc.mm
    held = mm.gathered_mb + mb
    flushed = (held // MMU_GATHER_MAX_MB) * MMU_GATHER_MAX_MB
    mm.gathered_mb = held - flushed
    free_memory(state, proc, flushed)


def tlb_finish_mmu(state: RunState, proc: Process) -> None:
    """mm/mmu_gather.c:tlb_finish_mmu() (v4.19 .. v6.1) at the end of exit_mmap()'s teardown:
    the pages still in the gather are freed (and uncharged)."""
    mm = proc.mm
    held, mm.gathered_mb = mm.gathered_mb, 0.0
    free_memory(state, proc, held)


def unmap_vmas_progress(state: RunState, proc: Process) -> None:
    """What the exit path's `unmap_vmas()` (mm/memory.c, v4.19/v6.1) has zapped by now.

    The phase frees its memory at its end (one event); a reaper that looks in the middle (in
    RFC v2 and v6.1 `unmap_vmas()` runs without `mmap_sem` for write, so `down_read_trylock()`
    succeeds) must see the pages the victim has already zapped, in proportion to the CPU time
    the victim has had in the phase, so that its reap, and RFC v2's "substantial memory left"
    check, see what is really left. Lazy: costs no event.
    """
    mm = proc.mm
    z = mm.zap
    if z is None:
        return
    th, cpu0, work, mb0 = z
    done = min(1.0, (state.machine.cpu_time(th) - cpu0) / work) if work > 0.0 else 1.0
    tlb_gather(state, proc, mm.zap_down_to((1.0 - done) * mb0))


def remove_vma_loop(state: RunState, proc: Process, th: Thread):
    """E8: `vm_ops->close()`, `fput()`: may sleep for as long as it likes (no cond_resched point).

    With probability `close_blocks_on_memory_p` a `->close()` waits for memory of the OOM
    domain (say, for a writeback worker that allocates): Handa's 2018-10-30 objection.
    """
    machine = state.machine
    dom = state.domain
    close_s = float(state.streams.draw(state.cfg.close_ms, "close_ms", proc.pid)) / 1e3
    p_block = state.cfg.close_blocks_on_memory_p
    if dom is not None and proc.oom_victim and p_block > 0.0 and state.streams.uniform("close_blocks", proc.pid) < p_block:
        proc.exit_phase = "E8 remove_vma (->close() waits for memory)"
        proc.close_waits_for_memory = True
        machine.block(th)
        while dom.headroom() <= EPS_MB:
            yield dom.changed
        proc.close_waits_for_memory = False
        proc.exit_phase = Phase.REMOVE_VMA.value
    if close_s > 0.0:
        yield machine.run(th, close_s, resched_every_s=close_s)


__all__ = ["do_exit", "exit_mmap", "unmap_vmas_progress", "MB_PER_GB"]

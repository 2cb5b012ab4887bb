"""The OOM killer: `out_of_memory()`, `select_bad_process()`, `oom_kill_process()`, `mark_oom_victim()`.

Models mm/oom_kill.c as of v4.19 (reference section 1.2) with the policies' changes:
Handa's victim list (d2, e) and direct OOM reaping (e). The oom_reaper half of oom_kill.c is
in oom_reaper.py; setting MMF_OOM_SKIP and releasing a victim in oom_victim.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from oommodel.kernel.mm import MMF
from oommodel.kernel.oom_reaper import oom_reap_task_mm, queue_oom_reaper, wake_oom_reaper
from oommodel.kernel.oom_victim import release_victim, set_mmf_oom_skip
from oommodel.outcome import SkipBy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process
    from oommodel.sched import Thread


class OomResult(Enum):
    KILLED = "killed"          # a victim was selected (or current was marked): retry at once
    PENDING = "pending"        # an earlier victim is pending: "progress" without killing
    NO_VICTIM = "no_victim"    # nothing eligible: memcg forces the charge, global panics


@dataclass(frozen=True, slots=True)
class OomOutcome:
    kind: OomResult
    deadline: float | None = None   # d2/e: when the pending victim's stall back-off expires


def out_of_memory(state: RunState, proc: Process, th: Thread):
    """Models mm/oom_kill.c:out_of_memory(), v4.19; the caller holds `oom_lock`."""
    state.stats.oom_calls += 1
    if state.costs.oom_kill_s > 0.0:
        yield state.machine.run(th, state.costs.oom_kill_s)
    # task_will_free_mem(current): a dying current is already an OOM victim (only
    # oom_kill_process() kills), so nothing is left to mark: retry at once
    if proc.killed and not proc.mm.has(MMF.MMF_OOM_SKIP):
        return OomOutcome(OomResult.KILLED)
    pending, deadline = pending_victims(state)
    if pending:
        if state.policy.direct_reap:
            for victim in pending:
                yield from oom_reap_task_mm(state, th, victim, by=SkipBy.DIRECT)
        return OomOutcome(OomResult.PENDING, deadline)
    chosen = select_bad_process(state)
    if chosen is None:
        return OomOutcome(OomResult.NO_VICTIM)
    oom_kill_process(state, chosen, th)
    return OomOutcome(OomResult.KILLED)


def pending_victims(state: RunState) -> tuple[list[Process], float | None]:
    """The `oom_evaluate_task()` abort rule: victims that still block a new selection.

    v4.19: a victim whose `oom_mm` lacks MMF_OOM_SKIP. Handa's list (d2, e): a victim stays
    until its `__mmput` finishes or its score has not dropped for `stall_s`, checked only
    when somebody calls out_of_memory() (30 checks >= HZ/10 apart in the patch).
    """
    now = state.env.now
    pending: list[Process] = []
    deadline: float | None = None
    if not state.policy.victim_list_backoff:
        skip = MMF.MMF_OOM_SKIP                   # hot: runs on every OOM call, over every victim
        for v in state.victims:
            if not v.mm.flags & skip:
                pending.append(v)
        return pending, None
    stall_s = state.cfg.stall_s
    assert stall_s is not None
    for v in state.victims:
        if not v.in_victim_list:
            continue
        score = v.mm.badness_mb()
        if score < v.last_score - 1e-9:
            v.last_score = score
            v.last_score_drop = now
        if now - v.last_score_drop >= stall_s - 1e-12:
            set_mmf_oom_skip(state, v, SkipBy.TIMEOUT)     # never selected again
            release_victim(state, v, SkipBy.TIMEOUT)
            continue
        pending.append(v)
        expiry = v.last_score_drop + stall_s
        deadline = expiry if deadline is None else min(deadline, expiry)
    return pending, deadline


def select_bad_process(state: RunState) -> Process | None:
    """Models mm/oom_kill.c:select_bad_process() + oom_badness(), v4.19.

    badness = rss + page tables + oom_score_adj * totalpages / 1000, at least one page;
    OOM_SCORE_ADJ_MIN, MMF_OOM_SKIP and tasks without an mm are ineligible; the first
    maximum in task-list order wins (the order is a seeded permutation).
    """
    assert state.domain is not None
    adj_scale = state.domain.limit_mb / 1000.0
    page_mb = 4.0 / 1024.0
    skip = MMF.MMF_OOM_SKIP
    best: Process | None = None
    best_points = 0.0
    live: list[Process] = []
    for p in state.scan_order:                    # hot: inlined badness, plain-int flags
        mm = p.mm
        if p.mm_gone or mm.flags & skip:
            continue                              # for good: dropped from the walk below
        live.append(p)
        if p.oom_score_adj == -1000:
            continue
        points = mm.anon_mb + mm.mlocked_mb + mm.file_mb + mm.pgtable_mb + p.oom_score_adj * adj_scale
        if points < page_mb:
            points = page_mb
        if points > best_points:
            best, best_points = p, points
    # A task past exit_mm() or with MMF_OOM_SKIP never becomes eligible again (neither is ever
    # undone): later walks skip it without looking, in the same order (a kill per walk otherwise
    # makes the walks quadratic in the number of kills).
    state.scan_order = live
    return best


def oom_kill_process(state: RunState, victim: Process, th: Thread) -> None:
    """Models mm/oom_kill.c:oom_kill_process() / __oom_kill_process(), v4.19: SIGKILL the victim,
    mark it, wake (or, v5.18+, queue) the oom_reaper."""
    now = state.env.now
    st = state.stats
    if any(v.mm.badness_mb() > 1e-6 for v in state.victims):
        st.extra_kills += 1
    st.kills += 1
    if st.first_kill_s is None:
        st.first_kill_s = now
    victim.killed = True
    victim.kill_time = now
    victim.badness_at_kill_mb = victim.mm.badness_mb()
    victim.killed_itself = th in victim.threads
    machine = state.machine
    for t in victim.threads:
        victim.cpu_at_kill[t.tid] = machine.cpu_time(t)
    cfg = state.cfg
    p = cfg.writer_at_kill_p
    if p > 0.0 and state.streams.uniform("mmap_sem_writer", victim.pid) < p:
        hold_ms = float(state.streams.draw(cfg.writer_hold_ms, "writer_hold_ms", victim.pid))
        if hold_ms > 0.0 and victim.mm.mmap_sem.writer is None and not victim.mm.mmap_sem.readers:
            victim.writer_hold_s = hold_ms / 1e3
            victim.mm.mmap_sem.writer = victim.threads[0]
    mark_oom_victim(state, victim)
    if state.reaper is not None:
        if state.policy.oom_reaper_delay_s <= 0.0:
            wake_oom_reaper(state, victim, th.cpu if th.cpu is not None else th.allowed[0])
        else:
            queue_oom_reaper(state, victim, th)
    victim.kill_event.succeed()
    for t in victim.threads:
        if t in state.touching:
            machine.cancel_run(t)             # the fault returns; the signal is delivered
    state.detector.progress()


def mark_oom_victim(state: RunState, victim: Process) -> None:
    """Models mm/oom_kill.c:mark_oom_victim(), v4.19 (+ Handa's oom_victim_list, policies d2, e)."""
    victim.oom_victim = True
    victim.mm.flags |= MMF.MMF_OOM_VICTIM
    if state.policy.victim_list_backoff:
        victim.in_victim_list = True
        victim.last_score = victim.mm.badness_mb()
        victim.last_score_drop = state.env.now
    state.victims.append(victim)


def panic(state: RunState) -> None:
    """out_of_memory() with nothing to kill in the global domain: panic("Out of memory and no
    killable processes..."), v4.19. The run ends here."""
    state.stats.panic = True
    if not state.stop.triggered:
        state.stop.succeed()

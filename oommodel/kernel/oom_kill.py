"""The OOM killer: `out_of_memory()`, `select_bad_process()`, `oom_kill_process()`.

Models mm/oom_kill.c as of v4.19 (reference section 1.2) with the policies' changes:
Handa's victim list (d2, e) and direct OOM reaping (e).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from oommodel.kernel.mm import MMF
from oommodel.kernel.oom_reaper import reap_victim_mm

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.task import Process
    from oommodel.kernel.world import World
    from oommodel.sched import Thread


class OomResult(Enum):
    KILLED = "killed"          # a victim was selected (or current was marked): retry at once
    PENDING = "pending"        # an earlier victim is pending: "progress" without killing
    NO_VICTIM = "no_victim"    # nothing eligible: memcg forces the charge, global panics


@dataclass(frozen=True, slots=True)
class OomOutcome:
    kind: OomResult
    deadline: float | None = None   # d2/e: when the pending victim's stall back-off expires


def out_of_memory(world: World, proc: Process, th: Thread):
    """Models mm/oom_kill.c:out_of_memory(), v4.19; the caller holds `oom_lock`."""
    world.stats.oom_calls += 1
    if world.costs.oom_kill_s > 0.0:
        yield world.machine.run(th, world.costs.oom_kill_s)
    # task_will_free_mem(current): a dying current just gets marked and reaped
    if proc.killed and not proc.mm.has(MMF.MMF_OOM_SKIP):
        if not proc.oom_victim:
            world.mark_oom_victim(proc, th)
        return OomOutcome(OomResult.KILLED)
    pending, deadline = pending_victims(world)
    if pending:
        if world.policy.direct_reap:
            for victim in pending:
                yield from reap_victim_mm(world, th, victim, by="direct")
        return OomOutcome(OomResult.PENDING, deadline)
    chosen = select_bad_process(world)
    if chosen is None:
        return OomOutcome(OomResult.NO_VICTIM)
    world.oom_kill_process(chosen, th)
    return OomOutcome(OomResult.KILLED)


def pending_victims(world: World) -> tuple[list[Process], float | None]:
    """The `oom_evaluate_task()` abort rule: victims that still block a new selection.

    v4.19: a victim whose `oom_mm` lacks MMF_OOM_SKIP. Handa's list (d2, e): a victim stays
    until its `__mmput` finishes or its score has not dropped for `stall_s`, checked only
    when somebody calls out_of_memory() (30 checks >= HZ/10 apart in the patch).
    """
    now = world.env.now
    pending: list[Process] = []
    deadline: float | None = None
    if not world.policy.victim_list_backoff:
        skip = MMF.MMF_OOM_SKIP                   # hot: runs on every OOM call, over every victim
        for v in world.victims:
            if not v.mm.flags & skip:
                pending.append(v)
        return pending, None
    stall_s = world.opts["stall_s"]
    for v in world.victims:
        if not v.in_victim_list:
            continue
        score = v.mm.badness_mb()
        if score < v.last_score - 1e-9:
            v.last_score = score
            v.last_score_drop = now
        if now - v.last_score_drop >= stall_s - 1e-12:
            world.set_skip(v, "timeout")     # never selected again
            world.release_victim(v, "timeout")
            continue
        pending.append(v)
        expiry = v.last_score_drop + stall_s
        deadline = expiry if deadline is None else min(deadline, expiry)
    return pending, deadline


def select_bad_process(world: World) -> Process | None:
    """Models mm/oom_kill.c:select_bad_process() + oom_badness(), v4.19.

    badness = rss + page tables + oom_score_adj * totalpages / 1000, at least one page;
    OOM_SCORE_ADJ_MIN, MMF_OOM_SKIP and tasks without an mm are ineligible; the first
    maximum in task-list order wins (the order is a seeded permutation).
    """
    adj_scale = world.domain.limit_mb / 1000.0
    page_mb = 4.0 / 1024.0
    skip = MMF.MMF_OOM_SKIP
    best: Process | None = None
    best_points = 0.0
    for p in world.scan_order:                    # hot: inlined badness, plain-int flags
        mm = p.mm
        if p.mm_gone or p.oom_score_adj == -1000 or mm.flags & skip:
            continue
        points = mm.anon_mb + mm.mlocked_mb + mm.file_mb + mm.pgtable_mb + p.oom_score_adj * adj_scale
        if points < page_mb:
            points = page_mb
        if points > best_points:
            best, best_points = p, points
    return best

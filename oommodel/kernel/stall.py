"""Why nothing progresses, decided from the run state at the moment the lockup detector fires."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.kernel.softirq import stuck_cpus
from oommodel.outcome import LockupReason

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState


def describe_stall(state: RunState) -> tuple[LockupReason, str]:
    """(label, detail): the cause, read from the state (first match wins), and one line of particulars.

    The first victim the OOM killer still waits for decides: a reaper timer stuck behind a
    starved ksoftirqd, then a handed-over victim, a starved victim, a ->close() waiting for
    memory, else plainly pending. With no victim pending, a starved oom_lock owner, else nothing.
    """
    pending = [v for v in state.victims if v.released_by is None]
    if pending:
        v = pending[0]
        alive = [t for t in v.threads if not t.exited]
        where = ""
        if alive:
            t = alive[0]
            st = "running" if t.rate > 0.0 else ("runnable, starved" if t.runnable else "blocked")
            where = f" on CPU {t.cpu} as {t.attr}, {st}"
        stuck = stuck_cpus(state)
        if state.reaper is not None and state.reaper.timer_pending and stuck:
            return (LockupReason.REAPER_TIMER_STUCK,
                    f"OOM_REAPER_DELAY/HZ/10 timer waits for starved ksoftirqd on CPU "
                    f"{','.join(map(str, stuck))}; victim {v.name} in {v.exit_phase}{where}")
        if v.handed_over:
            return LockupReason.VICTIM_STARVED_AFTER_HANDOVER, f"{v.name} in {v.exit_phase}{where}"
        if alive and alive[0].runnable and alive[0].rate == 0.0:
            return LockupReason.VICTIM_STARVED, f"{v.name} in {v.exit_phase}{where}"
        if v.close_waits_for_memory:
            return LockupReason.CLOSE_WAITS_FOR_MEMORY, f"{v.name} in {v.exit_phase}"
        return LockupReason.VICTIM_PENDING, f"{v.name} in {v.exit_phase}{where}"
    owner = state.oom_lock.owner
    if owner is not None and owner.rate == 0.0:
        return LockupReason.OOM_LOCK_HOLDER_STARVED, f"{owner.name} as {owner.attr} on CPU {owner.cpu}"
    return LockupReason.NO_PROGRESS, "allocators wait with no victim pending"

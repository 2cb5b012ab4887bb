"""Why nothing progresses, read from the run state at the moment the lockup detector fires."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.kernel.softirq import stuck_cpus

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState


def describe_stall(state: RunState) -> str:
    """One line on why nothing progresses, at the moment the detector fires."""
    pending = [v for v in state.victims if v.released_by is None]
    stuck = stuck_cpus(state)
    if pending:
        v = pending[0]
        alive = [t for t in v.threads if not t.exited]
        where = ""
        if alive:
            t = alive[0]
            st = "running" if t.rate > 0.0 else ("runnable, starved" if t.runnable else "blocked")
            where = f" on CPU {t.cpu} as {t.attr}, {st}"
        if state.reaper is not None and state.reaper.timer_pending and stuck:
            return (f"reaper_timer_stuck: OOM_REAPER_DELAY/HZ/10 timer waits for starved ksoftirqd on CPU "
                    f"{','.join(map(str, stuck))}; victim {v.name} in {v.exit_phase}{where}")
        if v.handed_over:
            return f"victim_starved_after_handover: {v.name} in {v.exit_phase}{where}"
        if alive and alive[0].runnable and alive[0].rate == 0.0:
            return f"victim_starved: {v.name} in {v.exit_phase}{where}"
        if "waits for memory" in v.exit_phase:
            return f"close_waits_for_memory: {v.name} in {v.exit_phase}"
        return f"victim_pending: {v.name} in {v.exit_phase}{where}"
    owner = state.oom_lock.owner
    if owner is not None and owner.rate == 0.0:
        return f"oom_lock_holder_starved: {owner.name} as {owner.attr} on CPU {owner.cpu}"
    return "no_progress: allocators wait with no victim pending"

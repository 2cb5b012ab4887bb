"""The result of one simulated run: a frozen record with a fixed set of fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum


class LockupReason(str, Enum):
    """Why nothing progressed when the lockup detector fired: a label, groupable across runs.

    Decided from the run state (kernel/stall.py); the particulars (pids, phase, CPU) are the
    free-text detail that goes with it.
    """

    REAPER_TIMER_STUCK = "reaper_timer_stuck"        # OOM_REAPER_DELAY / HZ/10 timer waits for a starved ksoftirqd
    VICTIM_STARVED_AFTER_HANDOVER = "victim_starved_after_handover"  # the reaper handed over, the victim gets no CPU
    VICTIM_STARVED = "victim_starved"                # the victim is runnable but gets no CPU
    CLOSE_WAITS_FOR_MEMORY = "close_waits_for_memory"  # ->close() in remove_vma() waits for memory
    VICTIM_PENDING = "victim_pending"                # the victim holds the OOM killer up for another cause
    OOM_LOCK_HOLDER_STARVED = "oom_lock_holder_starved"  # oom_lock's owner gets no CPU
    NO_PROGRESS = "no_progress"                      # allocators wait with no victim pending


class SkipBy(str, Enum):
    """Who set MMF_OOM_SKIP on a victim (or released it from Handa's victim list).

    The values are the labels `Outcome.oom_skip_by` / `released_by` and the Parquet columns carry.
    """

    REAPER = "reaper"      # mm/oom_kill.c:oom_reap_task() after success or MAX_OOM_REAP_RETRIES
    EXIT = "exit"          # mm/mmap.c:exit_mmap() (or Handa's exit_oom_mm() at the end of __mmput)
    TIMEOUT = "timeout"    # a policy's back-off: Rientjes's deadline, Handa's stall_s
    DIRECT = "direct"      # an allocator that reaped the victim itself (Handa 3/8)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one `simulate()` call observed. A simulated lockup is an outcome, not an error.

    `lockup_reason` is why nothing progressed when the lockup detector fired (a `LockupReason`
    label) and `lockup_detail` the free text that goes with it (which victim, in which phase,
    where). `oom_skip_by` says who set MMF_OOM_SKIP on the first victim (at `first_skip_s`), a
    `SkipBy` label;
    `released_by` says who let
    the OOM killer move on from it (the same except under Handa's victim list, policies d2
    and e, where the victim stays pending until `__mmput` ends or its score stalls).
    `exits_pending_max` is the most killed processes that had freed their memory (`__mmput`
    returned) but had not yet exited, at one time and for a positive stretch of time (a victim
    that exits in the instant of its `__mmput` never waited); `exit_delay_max_s` the longest time from
    `__mmput` to exit (a process still waiting at the end counts up to `sim_time_s`).
    """

    lockup: bool
    lockup_reason: str          # a LockupReason value ("" without a lockup): a label, groupable
    lockup_detail: str          # its particulars: victim, phase, CPU, sched attr ("" without a lockup)
    max_stall_s: float
    first_progress_s: float | None
    first_kill_s: float | None
    first_skip_s: float | None
    kills: int
    extra_kills: int
    handed_over: bool
    handovers: int
    oom_skip_by: str
    released_by: str
    reaper_attempts: int
    memory_freed_mb: float
    panic: bool
    victims_pending_at_end: int
    oom_calls: int
    sim_time_s: float
    sim_events: int
    exits_pending_max: int
    exit_delay_max_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

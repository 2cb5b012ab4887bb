"""A process of the scenario at run time: its threads, its mm and its OOM-victim state.

Models the parts of `struct task_struct` / `struct signal_struct` the OOM path reads
(v4.19): the pending SIGKILL, `signal->oom_mm` (the process stays an OOM victim after
`exit_mm()` cleared `tsk->mm`, reference section 5.6) and `oom_score_adj`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from oommodel.kernel.mm import Mm
from oommodel.outcome import SkipBy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.sched import SchedAttr, Thread


class Process:
    __slots__ = (
        "pid", "group", "role", "oom_score_adj", "attr", "allowed", "threads", "mm",
        "killed", "kill_time", "kill_event", "oom_victim", "mmput_done", "released_by",
        "handed_over", "in_victim_list", "last_score", "last_score_drop",
        "writer_hold_s", "cpu_at_kill", "exit_phase", "close_waits_for_memory", "mm_gone", "start_s", "mmput_time", "exit_time",
        "badness_at_kill_mb", "killed_itself", "handover_time",
    )

    def __init__(self, env: simpy.Environment, pid: int, group: str, role: str, oom_score_adj: int,
                 attr: SchedAttr, allowed: tuple[int, ...] | None, mm: Mm) -> None:
        self.pid = pid
        self.group = group
        self.role = role
        self.oom_score_adj = oom_score_adj
        self.attr = attr
        self.allowed = allowed
        self.threads: list[Thread] = []
        self.mm = mm
        self.killed = False
        self.kill_time: float | None = None
        self.kill_event = env.event()
        self.oom_victim = False            # signal->oom_mm != NULL
        self.mmput_done = False            # __mmput() returned
        self.released_by: SkipBy | None = None  # who let the OOM killer move on from this victim
        self.handed_over = False
        self.in_victim_list = False        # Handa's oom_victim_list (policies d2, e)
        self.last_score = 0.0
        self.last_score_drop = 0.0
        self.writer_hold_s = 0.0           # held mmap_sem for write when killed
        self.cpu_at_kill: dict[int, float] = {}
        self.exit_phase = "running"           # where its exit is, for the lockup detail (text only)
        self.close_waits_for_memory = False   # a ->close() in remove_vma() waits for memory of the domain
        self.start_s = 0.0
        self.mm_gone = False               # every thread passed exit_mm(): find_lock_task_mm() fails
        self.mmput_time: float | None = None  # when __mmput() returned: its memory is freed
        self.exit_time: float | None = None   # when its last thread reached do_task_dead()
        # What the "Killed process" line and the reaper's "Handed over" line show, kept for per-victim
        # comparisons with the kernel's console (benchmarks/handover_victims.py); nothing reads them.
        self.badness_at_kill_mb = 0.0      # oom_badness() before the oom_score_adj term, at the kill
        self.killed_itself = False         # the allocator that ran out_of_memory() chose its own process
        self.handover_time: float | None = None  # when the reaper handed MMF_OOM_SKIP over (RFC v2)

    @property
    def name(self) -> str:
        return f"{self.group}/{self.pid}"

    def __repr__(self) -> str:
        return f"<Process {self.name} killed={self.killed} phase={self.exit_phase}>"

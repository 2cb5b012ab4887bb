"""A schedulable thread's runtime state (the scheduler's part of task_struct)."""

from __future__ import annotations

import simpy

from oommodel.sched.attrs import SchedAttr, SchedPolicy

_FIFO = SchedPolicy.FIFO   # an Enum class attribute costs ~0.2 us in CPython 3.11 (see kernel/exit.py)


class Thread:
    """Runtime state of one schedulable thread (task_struct's scheduler part)."""

    __slots__ = (
        "name", "group", "tid", "attr", "allowed", "cpu", "runnable", "demand",
        "rate", "cpu_time", "work_left", "done_ev", "resched_every_s", "seg_start", "rate_since",
        "pinned", "pin_rate", "pin_until", "starve_since", "balance_pending", "exited",
        "is_rt", "is_fifo", "prio", "weight", "mobile", "stamp", "new_rate", "trace_t0", "seq",
        "waker_cpu",
    )

    def __init__(self, name: str, group: str, tid: int, attr: SchedAttr, allowed: tuple[int, ...]) -> None:
        self.name = name
        self.group = group
        self.tid = tid
        self.allowed = allowed
        self.cpu: int | None = None
        self.runnable = False
        self.demand = 0.0
        self.rate = 0.0
        self.cpu_time = 0.0
        self.work_left: float | None = None
        self.done_ev: simpy.Event | None = None
        self.resched_every_s: float | None = None
        self.seg_start = 0.0
        self.rate_since = 0.0
        self.pinned = False
        self.pin_rate = 0.0
        self.pin_until = 0.0
        self.starve_since: float | None = None
        self.balance_pending = False
        self.exited = False
        self.mobile = len(allowed) > 1
        self.stamp = 0
        self.new_rate = 0.0
        self.trace_t0 = 0.0
        self.seq = 0                       # calls made on this thread (run/spin/block/exit)
        self.waker_cpu: int | None = None  # set by Machine.wake_up(): placement by topology
        self._set_attr(attr)

    def _set_attr(self, attr: SchedAttr) -> None:
        self.attr = attr
        self.is_rt = attr.is_rt
        self.is_fifo = attr.policy is _FIFO
        self.prio = attr.rt_priority
        self.weight = attr.weight

    def __repr__(self) -> str:
        return (f"Thread({self.name!r}, tid={self.tid}, {self.attr}, cpu={self.cpu}, "
                f"runnable={self.runnable}, demand={self.demand}, rate={self.rate:.6g})")


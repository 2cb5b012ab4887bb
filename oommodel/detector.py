"""Lockup detectors: each states its criterion in one line, in simulated time.

A detector is told when a thread starts and stops waiting in the allocator of the OOM
domain and when progress happens; it never looks at wall-clock time, so a simulated lockup
can never be confused with a worker that hangs.
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

from oommodel.outcome import LockupReason


class AllocatorStallDetector:
    """Models the soft-lockup / hung-task view of an OOM lockup (reference section 5.9)."""

    criterion = (
        "some thread waits in the allocator of the OOM domain and, for lockup_after_s of simulated "
        "time, no allocation succeeds, no victim is selected and no MMF_OOM_SKIP is set"
    )

    __slots__ = ("env", "after_s", "describe", "waiting", "stall_start", "max_stall_s",
                 "lockup", "reason", "detail", "_armed_for")

    def __init__(self, env: simpy.Environment, lockup_after_s: float,
                 describe: Callable[[], tuple[LockupReason, str]]) -> None:
        """`describe()` says why nothing progresses (label, detail) at the moment of a lockup."""
        self.env = env
        self.after_s = lockup_after_s
        self.describe = describe
        self.waiting = 0
        self.stall_start: float | None = None
        self.max_stall_s = 0.0
        self.lockup = False
        self.reason: LockupReason | None = None
        self.detail = ""
        self._armed_for: float | None = None   # stall start the pending check belongs to

    def wait_start(self) -> None:
        if self.waiting == 0:
            self.stall_start = self.env.now
            self._arm()
        self.waiting += 1

    def wait_end(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self._close(self.env.now)
            self.stall_start = None

    def progress(self) -> None:
        if self.waiting > 0:
            now = self.env.now
            self._close(now)
            self.stall_start = now
            self._arm()

    def finish(self) -> None:
        if self.waiting > 0 and self.stall_start is not None:
            self._close(self.env.now)
            if not self.lockup and self.max_stall_s >= self.after_s:
                self._declare()

    def _close(self, now: float) -> None:
        if self.stall_start is not None and now - self.stall_start > self.max_stall_s:
            self.max_stall_s = now - self.stall_start

    def _arm(self) -> None:
        # One pending check at a time: a stall that restarts re-arms when the old check fires.
        if self._armed_for is None and not self.lockup:
            self._armed_for = self.stall_start
            self.env.timeout(self.after_s).callbacks.append(self._check)

    def _check(self, _event: simpy.Event) -> None:
        self._armed_for = None
        if self.lockup or self.stall_start is None or self.waiting == 0:
            return
        if self.env.now - self.stall_start >= self.after_s - 1e-12:
            self._declare()
        else:
            self._armed_for = self.stall_start
            self.env.timeout(self.stall_start + self.after_s - self.env.now).callbacks.append(self._check)

    def _declare(self) -> None:
        self.lockup = True
        self.reason, self.detail = self.describe()

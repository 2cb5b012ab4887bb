"""`oom_lock` and `mmap_sem` as the model sees them.

Waiting is modelled by blocking the waiting thread on the CPU model and handing it a SimPy
event that succeeds when it owns the lock; no spinning is simulated (mutex optimistic
spinning and handoff are ignored, reference section 5.3).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import simpy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.sched import Thread


class Mutex:
    """Models kernel/locking/mutex.c as used for `oom_lock` (v4.19).

    `trylock` is the global allocator's `mutex_trylock(&oom_lock)`; `lock` is the memcg OOM
    path's `mutex_lock(&oom_lock)` (blocking in 4.19/4.20, killable from 5.1: the caller
    withdraws a killable waiter with `cancel`). Waiters are served in FIFO order. Callers
    try `trylock` first (the `__mutex_trylock_fast()` path of `mutex_lock()`), so an
    uncontended lock costs no SimPy event; `lock` then queues behind the owner.
    """

    __slots__ = ("env", "name", "owner", "_waiters", "long_hold")

    def __init__(self, env: simpy.Environment, name: str) -> None:
        self.env = env
        self.name = name
        self.owner: Thread | None = None
        self._waiters: deque[tuple[Thread, simpy.Event]] = deque()
        self.long_hold = False  # held across work that may take long (policy c's exit path)

    def trylock(self, th: Thread) -> bool:
        if self.owner is None:
            self.owner = th
            return True
        return False

    def lock(self, th: Thread) -> simpy.Event:
        """Event that succeeds once `th` owns the mutex (at once when it is free)."""
        ev = self.env.event()
        if self.owner is None:
            self.owner = th
            ev.succeed()
        else:
            self._waiters.append((th, ev))
        return ev

    def cancel(self, th: Thread) -> None:
        """A killable waiter gave up (mutex_lock_killable returned -EINTR)."""
        self._waiters = deque((t, e) for t, e in self._waiters if t is not th)

    def unlock(self, th: Thread) -> None:
        assert self.owner is th, f"{self.name}: {th.name} unlocks a mutex owned by {self.owner and self.owner.name}"
        self.long_hold = False
        if self._waiters:
            nxt, ev = self._waiters.popleft()
            self.owner = nxt
            ev.succeed()
        else:
            self.owner = None


class RwSem:
    """Models kernel/locking/rwsem.c for `mm->mmap_sem` (v4.19).

    A reader's trylock fails while a writer holds the lock or waits for it (the 4.19 rwsem
    refuses new readers once a writer is queued). Blocking waiters are served in FIFO order,
    consecutive readers at the head together.
    """

    __slots__ = ("env", "readers", "writer", "_queue")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.readers: list[Thread] = []
        self.writer: Thread | None = None
        self._queue: deque[tuple[str, Thread, simpy.Event]] = deque()

    def down_read_trylock(self, th: Thread) -> bool:
        if self.writer is None and not self._queue:
            self.readers.append(th)
            return True
        return False

    def down_read(self, th: Thread) -> simpy.Event:
        ev = self.env.event()
        if self.writer is None and not self._queue:
            self.readers.append(th)
            ev.succeed()
        else:
            self._queue.append(("r", th, ev))
        return ev

    def up_read(self, th: Thread) -> None:
        self.readers.remove(th)
        self._grant()

    def down_write_trylock(self, th: Thread) -> bool:
        if self.writer is None and not self.readers and not self._queue:
            self.writer = th
            return True
        return False

    def down_write(self, th: Thread) -> simpy.Event:
        ev = self.env.event()
        if self.writer is None and not self.readers and not self._queue:
            self.writer = th
            ev.succeed()
        else:
            self._queue.append(("w", th, ev))
        return ev

    def up_write(self, th: Thread) -> None:
        assert self.writer is th
        self.writer = None
        self._grant()

    def _grant(self) -> None:
        if self.writer is not None:
            return
        while self._queue:
            kind, th, ev = self._queue[0]
            if kind == "w":
                if self.readers:
                    return
                self._queue.popleft()
                self.writer = th
                ev.succeed()
                return
            self._queue.popleft()
            self.readers.append(th)
            ev.succeed()

"""The OOM domain: a memcg with `memory.max`, or the whole machine.

Holds the page counter (`mm/page_counter.c` for memcg; free pages for the global case),
the threads waiting in the allocator, and one change notification: every waiting
allocator sleeps on `changed` (no event per reclaim pass) and is woken when something it
could observe on its next pass has changed: memory was freed, a victim was released
(MMF_OOM_SKIP or Handa's list), or `oom_lock` was taken or dropped by a long holder.
"""

from __future__ import annotations

import simpy

EPS_MB = 1e-9


class OomDomain:
    __slots__ = ("env", "kind", "limit_mb", "usage_mb", "changed", "version")

    def __init__(self, env: simpy.Environment, kind: str, limit_mb: float) -> None:
        self.env = env
        self.kind = kind
        self.limit_mb = limit_mb
        self.usage_mb = 0.0
        self.changed = env.event()
        self.version = 0           # bumped by every notify(): a waiter that saw an older one must not sleep

    @property
    def is_memcg(self) -> bool:
        return self.kind == "memcg"

    def headroom(self) -> float:
        return self.limit_mb - self.usage_mb

    def charge(self, mb: float, force: bool = False) -> float:
        """`page_counter_try_charge()`: what fits under the limit (all of it when forced)."""
        if force:
            self.usage_mb += mb
            return mb
        granted = min(mb, max(0.0, self.headroom()))
        self.usage_mb += granted
        return granted

    def uncharge(self, mb: float) -> None:
        if mb > EPS_MB:
            self.usage_mb = max(0.0, self.usage_mb - mb)
            self.notify()

    def notify(self) -> None:
        """Wake every waiter; they re-check on their next pass."""
        self.version += 1
        ev = self.changed
        if ev.callbacks:
            self.changed = self.env.event()
            ev.succeed()

"""Per-CPU run queues (kernel/sched/sched.h: struct rq with its rt_rq and cfs_rq) and
enqueue_task() / dequeue_task(), as of v4.19.

RT threads queue per priority (highest first; FIFO order inside a priority, wake-ups at the tail);
CFS and SCHED_IDLE threads share one list whose total weight is kept. The counters kept here
(RT-idle CPUs, movable RT threads) are what RT throttling and push/pull read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import simpy

from oommodel.sched.thread import Thread


class RunQueue:
    """One CPU's run queue (struct rq with its rt_rq and cfs_rq), plus its single pending timer."""

    __slots__ = (
        "idx", "rt_queues", "rt_prios", "nr_rt", "nr_rt_mobile", "cfs", "cfs_weight", "nr_cfs_mobile",
        "running", "new", "pinned", "last", "rt_rate", "rt_time", "pidx", "throttled", "cfs_cap",
        "rt_exhausted", "timer_ev", "timer_at", "on_timer", "nocfs_since", "armed_at",
    )

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.rt_queues: dict[int, list[Thread]] = {}
        self.rt_prios: list[int] = []      # descending
        self.nr_rt = 0
        self.nr_rt_mobile = 0
        self.cfs: list[Thread] = []
        self.cfs_weight = 0
        self.nr_cfs_mobile = 0
        self.running: list[Thread] = []    # threads with rate > 0
        self.new: list[Thread] = []        # scratch for the allocation being built
        self.pinned: list[Thread] = []
        self.last = 0.0
        self.rt_rate = 0.0
        self.rt_time = 0.0
        self.pidx = 0
        self.throttled = False
        self.cfs_cap = 1.0
        self.rt_exhausted = False
        self.timer_ev: simpy.Event | None = None   # the one pending CPU timer; any other that fires is stale
        self.timer_at: float | None = None
        self.on_timer: Callable[[simpy.Event], None] | None = None
        self.nocfs_since: float | None = None  # since when RT has left CFS no capacity (None: it has some)
        # env.now when timer_at (None: INF) was last set from the whole run queue; None once the
        # queue changed since (enqueue, dequeue, a run() ended): then timer_at may be stale
        self.armed_at: float | None = None

    @property
    def nr_running(self) -> int:
        return self.nr_rt + len(self.cfs)



class RunQueueOps:
    """enqueue_task() / dequeue_task() for the Machine (a mixin: the state lives on Machine)."""

    env: simpy.Environment
    _n_rt_idle: int
    _budget_s: float
    _budget_dirty: bool
    _nr_rt_mobile: int
    _pull_pending: bool

    if TYPE_CHECKING:
        def _settle(self, rq: RunQueue, now: float) -> None: ...
        def _compute_budget(self) -> float: ...

    def _enqueue(self, rq: RunQueue, th: Thread, head: bool = False) -> None:
        """Put th at the tail (or head) of its class queue on rq (enqueue_task())."""
        self._settle(rq, self.env.now)
        rq.armed_at = None
        th.cpu = rq.idx
        th.starve_since = None
        if th.is_rt:
            q = rq.rt_queues.get(th.prio)
            if q is None:
                q = rq.rt_queues[th.prio] = []
                prios = rq.rt_prios
                i = 0
                while i < len(prios) and prios[i] > th.prio:
                    i += 1
                prios.insert(i, th.prio)
            if head:
                q.insert(0, th)
            else:
                q.append(th)
            if rq.nr_rt == 0:
                self._n_rt_idle -= 1
                self._budget_s = self._compute_budget()
                self._budget_dirty = True
            rq.nr_rt += 1
            if th.mobile:
                rq.nr_rt_mobile += 1
                self._nr_rt_mobile += 1
        else:
            rq.cfs.append(th)
            rq.cfs_weight += th.weight
            if th.mobile:
                rq.nr_cfs_mobile += 1

    def _dequeue(self, rq: RunQueue, th: Thread) -> None:
        """Take th off rq (dequeue_task()); its rate is zeroed by the next recompute of rq."""
        self._settle(rq, self.env.now)
        rq.armed_at = None
        if th.is_rt:
            q = rq.rt_queues[th.prio]
            q.remove(th)
            if not q:
                del rq.rt_queues[th.prio]
                rq.rt_prios.remove(th.prio)
            rq.nr_rt -= 1
            if rq.nr_rt == 0:
                self._n_rt_idle += 1
                self._budget_s = self._compute_budget()
                self._budget_dirty = True
            if th.mobile:
                rq.nr_rt_mobile -= 1
                self._nr_rt_mobile -= 1
            if self._nr_rt_mobile:
                self._pull_pending = True  # rq's RT level dropped: pull_rt_task() candidates elsewhere
        else:
            rq.cfs.remove(th)
            rq.cfs_weight -= th.weight
            if th.mobile:
                rq.nr_cfs_mobile -= 1
        if th.pinned:
            th.pinned = False


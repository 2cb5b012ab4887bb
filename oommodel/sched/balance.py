"""Placement (kernel/sched/rt.c:select_task_rq_rt()/cpupri, kernel/sched/fair.c:select_task_rq_fair(),
simplified); allowed CPUs are hard. On wake (blocked -> runnable, including the first run):
- RT: the allowed CPU whose highest runnable RT priority is lowest (a CPU with no RT thread is best);
  ties: the previous CPU if among the best, else the lowest index. A CPU running only CFS counts as
  "no RT" like an idle one (select_task_rq_rt() stays put unless the CPU's current task is RT).
- CFS/IDLE: an allowed CPU with no runnable thread at all (previous CPU first, else lowest index);
  else the allowed CPU with no runnable RT thread and the least CFS weight (previous CPU, then lowest
  index, on ties); else the previous CPU if allowed, else the lowest allowed index.
- push_rt_task() / pull_rt_task(): a runnable RT thread that gets rate 0 because higher (or earlier
  equal) RT threads use the whole CPU moves at once to an allowed CPU with no runnable RT thread of equal
  or higher priority (lowest top RT priority, then lowest index). Checked when its CPU is recomputed and
  whenever an RT thread leaves any run queue. Not done while the CPU is RT-throttled or while the thread
  waits behind a deferred preemption (both would only make threads bounce between CPUs).
- load_balance(): a runnable CFS/IDLE thread with rate 0 for balance_interval_s moves to the allowed CPU
  where it would get a positive rate (the CPU's last allocation left CFS capacity: no RT thread using it
  all, or RT throttled) with the least CFS weight (lowest index on ties). One timer per starved thread;
  a thread that finds no such CPU is re-checked balance_interval_s after some allowed CPU next gets CFS
  capacity (no periodic polling, so a starved thread costs no events while nothing changes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from oommodel.sched.attrs import MachineSpec
from oommodel.sched.runqueue import RunQueue
from oommodel.sched.thread import Thread
from oommodel.sched.tolerance import EPS
from oommodel.sched.topology import Topology, cfs_load, select_task_rq_fair


class Balance:
    """Wake-up placement, push_rt_task()/pull_rt_task() and load_balance() (a mixin on Machine)."""

    env: simpy.Environment
    spec: MachineSpec
    rqs: list[RunQueue]
    _starved: dict[int, Thread]

    if TYPE_CHECKING:
        def _enqueue(self, rq: RunQueue, th: Thread, head: bool = False) -> None: ...
        def _dequeue(self, rq: RunQueue, th: Thread) -> None: ...
        def _update(self, rq: RunQueue, waker: Thread | None) -> None: ...
        def _finish(self) -> None: ...

    def _select_task_rq_fair(self, th: Thread, waker_cpu: int, topo: Topology) -> int:
        """select_task_rq_fair() over the topology (sched/topology.py) for a thread woken by
        Machine.wake_up(); idle means `available_idle_cpu()`: nothing runnable on the CPU."""
        rqs = self.rqs
        idle = [not rq.nr_rt and not rq.cfs for rq in rqs]     # rq.nr_running == 0, without the property call
        load = [cfs_load(rq.cfs_weight, rq.cfs_cap) for rq in rqs]
        prev = th.cpu if th.cpu is not None else th.allowed[0]
        return select_task_rq_fair(waker_cpu, prev, th.allowed, idle, load, th.weight, topo)

    def _select_cpu(self, th: Thread) -> int:
        """Wake-up placement (select_task_rq_rt() / select_task_rq_fair(), simplified; see module doc)."""
        allowed = th.allowed
        waker = th.waker_cpu
        if waker is not None:
            th.waker_cpu = None
            topo = self.spec.topology
            if topo is not None and not th.is_rt and len(allowed) > 1:
                return self._select_task_rq_fair(th, waker, topo)
        if len(allowed) == 1:
            return allowed[0]
        rqs = self.rqs
        prev = th.cpu if th.cpu is not None and th.cpu in allowed else None
        if th.is_rt:
            best = -1
            best_key = 1 << 30
            for c in allowed:
                rq = rqs[c]
                key = rq.rt_prios[0] if rq.nr_rt else 0
                if key < best_key:
                    best_key, best = key, c
            if prev is not None:
                rq = rqs[prev]
                if (rq.rt_prios[0] if rq.nr_rt else 0) == best_key:
                    return prev
            return best
        if prev is not None and rqs[prev].nr_running == 0:
            return prev
        best = -1
        best_w = -1
        for c in allowed:
            rq = rqs[c]
            if rq.nr_running == 0:
                return c
            if rq.nr_rt == 0 and (best < 0 or rq.cfs_weight < best_w):
                best, best_w = c, rq.cfs_weight
        if best >= 0:
            if prev is not None and rqs[prev].nr_rt == 0 and rqs[prev].cfs_weight == best_w:
                return prev
            return best
        return prev if prev is not None else allowed[0]


    def _push_rt(self, rq: RunQueue) -> None:
        """push_rt_task(): move RT threads left without CPU to a CPU with no RT of >= priority."""
        cands = [th for p in rq.rt_prios for th in rq.rt_queues[p]
                 if th.mobile and th.demand > 0.0 and th.rate == 0.0 and not th.pinned]
        for th in cands:
            if th.cpu != rq.idx or not th.runnable or th.rate > 0.0:
                continue
            best = -1
            best_key = 1 << 30
            for c in th.allowed:
                if c == rq.idx:
                    continue
                o = self.rqs[c]
                key = o.rt_prios[0] if o.nr_rt else 0
                if key < th.prio and key < best_key:
                    best, best_key = c, key
            if best < 0:
                continue
            self._dequeue(rq, th)
            dst = self.rqs[best]
            self._enqueue(dst, th)
            self._update(dst, th)

    def _note_starved(self, rq: RunQueue, now: float) -> None:
        """CFS got no capacity on rq: start a load_balance() timer for each movable starved thread."""
        for th in rq.cfs:
            if not th.mobile or th.demand <= 0.0 or th.rate > 0.0:
                continue
            if th.starve_since is None:
                th.starve_since = now
            if not th.balance_pending:
                self._arm_balance(th, th.starve_since + self.spec.balance_interval_s, now)

    def _arm_balance(self, th: Thread, at: float, now: float) -> None:
        th.balance_pending = True
        ev = self.env.timeout(max(0.0, at - now))
        ev.callbacks.append(lambda _ev, th=th: self._load_balance(th))

    def _rearm_starved(self, rq: RunQueue, now: float) -> None:
        """rq has CFS capacity again: threads that found no target get another load_balance() pass."""
        for tid, th in list(self._starved.items()):
            if th.exited or not th.runnable or th.is_rt or th.rate > 0.0 or th.starve_since is None:
                del self._starved[tid]
            elif th.cpu != rq.idx and rq.idx in th.allowed:
                del self._starved[tid]
                if not th.balance_pending:
                    self._arm_balance(th, now + self.spec.balance_interval_s, now)

    def _load_balance(self, th: Thread) -> None:
        th.balance_pending = False
        if th.exited or not th.runnable or th.is_rt or th.rate > 0.0 or th.demand <= 0.0 or th.starve_since is None:
            return
        now = self.env.now
        due = th.starve_since + self.spec.balance_interval_s
        if now < due - EPS:
            self._arm_balance(th, due, now)
            return
        best = -1
        best_w = 0
        for c in th.allowed:
            if c == th.cpu:
                continue
            o = self.rqs[c]
            if o.cfs_cap > 0.0 and (best < 0 or o.cfs_weight < best_w):
                best, best_w = c, o.cfs_weight
        if best < 0:
            self._starved[th.tid] = th
            return
        src = self.rqs[th.cpu]  # type: ignore[index]
        self._dequeue(src, th)
        dst = self.rqs[best]
        self._enqueue(dst, th)
        self._update(dst, None)
        self._update(src, None)
        self._finish()

"""Fluid (GPS) CPU scheduler on SimPy: per-CPU run queues, class order RT > CFS, as of v4.19.

Event-driven: a CPU changes state only when a thread calls run/spin/block/sleep/set_attr/exit or when
its own single pending timer fires (earliest run() completion, RT throttle start, RT period end,
deferred preemption point). Between events every runnable thread receives CPU at a constant *rate*, and
CPU time is settled lazily (cpu_time += rate * elapsed), so a spinning thread costs no events.

Preemption (kernel/sched/core.c:check_preempt_curr(), resched_curr(), _cond_resched()): a run/spin call
given resched_every_s is a non-preemptible kernel segment with cond_resched() points at
start + k * resched_every_s. With preempt "none" or "voluntary", when an RT thread wakes (or is raised)
and would take CPU from a thread that is in such a segment and has been running since before this
instant (it started running before now), that thread keeps its current rate ("pinned") until its
next preemption point (a thread that got the CPU only at this instant is not protected); every other
thread on the CPU is re-shared at once. The end of a run/spin call (the caller's next call on the
thread) is a preemption point too. "voluntary" == "none" here: might_sleep() points are not modelled
separately. Lower-class changes are never delayed: CFS vs CFS (SCHED_IDLE included) is fluid sharing,
and throttling takes effect at once. With "full" (CONFIG_PREEMPT) everything takes effect at once.

Calls (the model's contract): each run/spin/block/sleep/exit call on a thread supersedes the previous
one; a run() event still pending then never fires. set_attr() follows __sched_setscheduler(): an
unchanged attr is a no-op; a queued RT thread whose priority drops goes to the head of its new priority,
otherwise to the tail. A thread demoted by set_attr() loses CPU at once even inside a non-preemptible
segment (only wakeups and raises are deferred, as specified).

Not modelled: SCHED_DEADLINE and the stop class, hard/soft interrupts, CFS slices and wakeup
granularity (SCHED_IDLE is only its weight 3, which a nice-0 thread beats 1024:3), idle-CPU newidle
balancing apart from the rules above, NUMA and capacity differences between CPUs.

The machine is put together from one module per concern; this one holds the public API and the
recompute that ties them together:
- runqueue.py: struct rq, enqueue_task() / dequeue_task();
- fluid.py: rates on one CPU (class order, CFS weights, water-filling) and lazy settling;
- rt_throttle.py: the RT budget (sched_rt_runtime_exceeded(), do_balance_runtime());
- balance.py: wake-up placement, push_rt_task()/pull_rt_task(), load_balance();
- timers.py: each CPU's single timer and the end of run() segments;
- simpy_glue.py: the only code that touches SimPy internals (pinned in pyproject.toml).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import simpy
from simpy.events import Event

from oommodel.sched.attrs import MachineSpec, SchedAttr
from oommodel.sched.balance import Balance
from oommodel.sched.fluid import FluidShare
from oommodel.sched.rt_throttle import RtThrottle
from oommodel.sched.runqueue import RunQueue, RunQueueOps
from oommodel.sched.thread import Thread
from oommodel.sched.timers import CpuTimers
from oommodel.sched.tolerance import EPS, INF

__all__ = ["Machine", "Thread"]


class Machine(RunQueueOps, FluidShare, RtThrottle, Balance, CpuTimers):
    """The CPUs of one simulated machine; all scheduler state of one run lives here."""

    def __init__(self, env: simpy.Environment, spec: MachineSpec, trace: bool = False) -> None:
        self.env = env
        self.spec = spec
        self.rqs = [RunQueue(i) for i in range(spec.cpus)]
        for rq in self.rqs:
            rq.on_timer = self._make_cpu_timer(rq)
        self.threads: list[Thread] = []
        self.trace: list[tuple[str, int, float, float, float]] = []
        self._trace_on = trace
        self._all = tuple(range(spec.cpus))
        self._allowed_seen: dict[tuple[int, ...], tuple[int, ...]] = {}   # spawn(): allowed -> CPUs
        self._defer = spec.preempt != "full"
        self._rt_limited = spec.rt_throttling
        self._period = spec.rt_period_us / 1e6
        self._runtime = spec.rt_runtime_us / 1e6
        self._share = spec.rt_runtime_share and spec.cpus > 1
        self._n_rt_idle = spec.cpus
        self._budget_s = self._compute_budget()   # cached: depends only on _n_rt_idle
        self._budget_dirty = False
        self._pull_pending = False
        self._nr_rt_mobile = 0             # movable RT threads queued anywhere
        self._flushing = False
        self._stamp = 0
        self._starved: dict[int, Thread] = {}


    # ------------------------------------------------------------------ public API

    def spawn(self, name: str, group: str, attr: SchedAttr, allowed: Sequence[int] | None = None,
              last_cpu: int | None = None) -> Thread:
        """A new thread, blocked (no demand); allowed None = all CPUs. `last_cpu`: the CPU it last
        ran on before the run began (its prev_cpu for the first wake-up), one of `allowed`."""
        if allowed is None:
            cpus = self._all
        else:
            # a group's threads share one `allowed` tuple: normalised and checked once per run
            known = self._allowed_seen.get(allowed) if type(allowed) is tuple else None
            if known is not None:
                cpus = known
            else:
                cpus = tuple(sorted(set(int(c) for c in allowed)))
                if not cpus or cpus[0] < 0 or cpus[-1] >= self.spec.cpus:
                    raise ValueError(f"{name}: allowed CPUs {list(allowed)} not a non-empty subset of 0..{self.spec.cpus - 1}")
                if type(allowed) is tuple:
                    self._allowed_seen[allowed] = cpus
        th = Thread(name, group, len(self.threads), attr, cpus)
        if last_cpu is not None:
            if last_cpu not in cpus:
                raise ValueError(f"{name}: last_cpu {last_cpu} not in allowed CPUs {list(cpus)}")
            th.cpu = last_cpu
        self.threads.append(th)
        return th

    def run(self, th: Thread, work_s: float, resched_every_s: float | None = None) -> simpy.Event:
        """th needs work_s CPU-seconds; the event succeeds at the instant it has received them."""
        if th.exited:
            self._check_alive(th)
        ev = Event(self.env)               # env.event() without the BoundClass lookup
        th.done_ev = None
        if work_s <= 0.0:
            self._start(th, 0.0, None, resched_every_s)
            ev.succeed()
            return ev
        th.done_ev = ev
        self._start(th, 1.0, float(work_s), resched_every_s)
        return ev

    def spin(self, th: Thread, demand: float = 1.0, resched_every_s: float | None = None) -> None:
        """th runnable with unbounded work at `demand` until the next call on th."""
        self._check_alive(th)
        if not 0.0 < demand <= 1.0:
            raise ValueError(f"{th.name}: demand must be in (0, 1], got {demand}")
        th.done_ev = None
        self._start(th, float(demand), None, resched_every_s)

    def wake_up(self, th: Thread, waker_cpu: int) -> None:
        """try_to_wake_up() from `waker_cpu`: th's next run()/spin() is placed by
        select_task_rq_fair() over the machine topology (sched/topology.py) instead of the
        simplified rule, when the spec has a topology and th is a CFS thread."""
        th.waker_cpu = waker_cpu

    def cfs_starved_since(self, cpu: int) -> float | None:
        """Since when RT threads have left CFS no capacity on `cpu` (None: CFS can run there)."""
        return self.rqs[cpu].nocfs_since

    def block(self, th: Thread) -> None:
        """th leaves the run queue (sleeping, or waiting on a lock)."""
        self._check_alive(th)
        self._block(th)

    def sleep(self, th: Thread, seconds: float) -> simpy.Event:
        """Block th and return a timer that fires after `seconds` (the caller then wakes it)."""
        self._check_alive(th)
        self._block(th)
        return self.env.timeout(max(0.0, seconds))

    def sleep_jiffies(self, th: Thread, n: int = 1) -> simpy.Event:
        """schedule_timeout(n): block until the n-th timer tick strictly after now."""
        self._check_alive(th)
        self._block(th)
        now = self.env.now
        return self.env.timeout(max(0.0, self.next_tick(now, n) - now))

    def next_tick(self, t: float, n: int = 1) -> float:
        """Time of the n-th tick (multiples of 1/hz) strictly after t."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        hz = self.spec.hz
        k = math.floor(t * hz + 1e-9) + n
        return k / hz

    def set_attr(self, th: Thread, attr: SchedAttr) -> None:
        """sched_setscheduler() at run time; a runnable thread stays runnable (requeue rules: module doc)."""
        self._check_alive(th)
        old = th.attr
        if attr == old:
            return  # __sched_setscheduler(): nothing changed, no requeue
        if not th.runnable:
            th._set_attr(attr)
            return
        rq = self.rqs[th.cpu]  # type: ignore[index]
        self._dequeue(rq, th)
        th._set_attr(attr)
        # __sched_setscheduler(): a queued RT task whose priority drops goes to the head of its new
        # priority (ENQUEUE_HEAD), otherwise to the tail.
        lowered = old.is_rt and attr.is_rt and attr.rt_priority < old.rt_priority
        self._enqueue(rq, th, head=lowered)
        raised = attr.is_rt and (not old.is_rt or attr.rt_priority > old.rt_priority)
        self._update(rq, th if raised else None)
        self._finish()

    def requeue_tail(self, th: Thread) -> None:
        """Move a runnable th to the tail of its priority on its run queue and re-share the CPU at
        once: enqueue with DEQUEUE_MOVE (rt.c:enqueue_rt_entity() list_add_tail) and a resched
        taken now. The caller decides that a preemption point is passed. No effect on CFS shares."""
        self._check_alive(th)
        if not th.runnable:
            return
        rq = self.rqs[th.cpu]  # type: ignore[index]
        self._dequeue(rq, th)
        self._enqueue(rq, th)
        self._update(rq, None)
        self._finish()

    def exit(self, th: Thread) -> None:
        """do_exit(): the thread is gone for good; its CPU time stays accounted."""
        if th.exited:
            return
        self._block(th)
        th.exited = True
        self._starved.pop(th.tid, None)

    def cpu_time(self, th: Thread) -> float:
        """Exact CPU-seconds th has received up to env.now."""
        if th.rate > 0.0:
            return th.cpu_time + th.rate * (self.env.now - self.rqs[th.cpu].last)  # type: ignore[index]
        return th.cpu_time

    def cpu_time_by_group(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for th in self.threads:
            out[th.group] = out.get(th.group, 0.0) + self.cpu_time(th)
        return out

    def rate(self, th: Thread) -> float:
        return th.rate

    def is_running(self, th: Thread) -> bool:
        return th.rate > 0.0

    def flush_trace(self) -> None:
        """Close the running trace segments at env.now (they continue as new segments)."""
        if not self._trace_on:
            return
        now = self.env.now
        for rq in self.rqs:
            for th in rq.running:
                if now > th.trace_t0:
                    self.trace.append((th.name, rq.idx, th.trace_t0, now, th.rate))
                    th.trace_t0 = now

    def check_invariants(self) -> None:
        """AssertionError unless: per-CPU rates sum <= 1, runnable threads on allowed CPUs, one queue
        each, and a timer marked exact for this instant (`armed_at`) is what a full pass finds."""
        seen: dict[int, int] = {}
        now = self.env.now
        for rq in self.rqs:
            if rq.armed_at == now:
                armed = INF if rq.timer_at is None else rq.timer_at
                assert armed == self._next_cpu_event(rq, now), f"cpu {rq.idx}: timer {armed} stale at {now}"
            total = 0.0
            for th in rq.running:
                assert th.rate > 0.0, f"{th!r} in running list with rate 0"
                assert th.runnable and th.cpu == rq.idx, f"{th!r} running on cpu {rq.idx} but not queued there"
                total += th.rate
            assert total <= 1.0 + 1e-9, f"cpu {rq.idx}: rates sum to {total}"
            pins = [p for p in rq.pinned if p.pinned]
            assert len({p.tid for p in pins}) == len(pins), f"cpu {rq.idx}: thread pinned twice"
            for p in pins:
                assert p.runnable and p.cpu == rq.idx and 0.0 < p.rate <= p.demand + 1e-12, f"bad pin {p!r}"
            members = [th for p in rq.rt_prios for th in rq.rt_queues[p]] + rq.cfs
            assert len(rq.rt_prios) == len(rq.rt_queues) and rq.rt_prios == sorted(rq.rt_prios, reverse=True)
            assert rq.nr_rt == sum(len(q) for q in rq.rt_queues.values()), f"cpu {rq.idx}: nr_rt drift"
            assert rq.cfs_weight == sum(th.weight for th in rq.cfs), f"cpu {rq.idx}: cfs_weight drift"
            for th in members:
                assert th.tid not in seen, f"{th!r} on run queues {seen[th.tid]} and {rq.idx}"
                seen[th.tid] = rq.idx
                assert th.runnable and th.cpu == rq.idx, f"{th!r} queued on cpu {rq.idx}"
                assert rq.idx in th.allowed, f"{th!r} on cpu {rq.idx} outside allowed {th.allowed}"
                assert th.is_rt == (th in rq.rt_queues.get(th.prio, ())), f"{th!r} in wrong class queue"
        for th in self.threads:
            if th.runnable:
                assert th.tid in seen, f"{th!r} runnable but on no run queue"
            else:
                assert th.rate == 0.0 and th.demand == 0.0, f"{th!r} blocked but has rate/demand"
        assert self._n_rt_idle == sum(1 for rq in self.rqs if rq.nr_rt == 0), "n_rt_idle drift"


    # ------------------------------------------------------------------ state changes

    def _check_alive(self, th: Thread) -> None:
        if th.exited:
            raise RuntimeError(f"{th.name}: thread has exited")

    def _start(self, th: Thread, demand: float, work: float | None, resched: float | None) -> None:
        """Common part of run()/spin(): a new segment begins (which is also a preemption point)."""
        th.seq += 1
        if th.runnable and not th.pinned and th.demand == demand:
            # Same demand on the same run queue: every rate stays as it is (typically the next
            # run() right after the previous one ended), so only the CPU's timer moves.
            rq = self.rqs[th.cpu]  # type: ignore[index]
            now = self.env.now
            if now > rq.last:
                self._settle(rq, now)
            if rq.armed_at == now and th.work_left is None:
                # rq's timer is exact for this instant and th has no part in it (typically its
                # run() just ended, timers.py:_complete_lone): the next CPU event is that one or
                # th's own completion, what _next_cpu_event() would find without a pass over
                # rq.running (same expression for th; a minimum is exact)
                t = INF if rq.timer_at is None else rq.timer_at
                if work is not None and th.rate > 0.0:
                    tt = now + work / th.rate
                    if tt < t:
                        t = tt
                th.work_left = work
            else:
                th.work_left = work
                t = self._next_cpu_event(rq, now)
            th.resched_every_s = resched
            th.seg_start = now
            self._set_cpu_timer(rq, t, now)
            return
        th.demand = demand
        th.work_left = work
        th.resched_every_s = resched
        th.seg_start = self.env.now
        th.pinned = False
        if th.runnable:
            rq = self.rqs[th.cpu]  # type: ignore[index]
        else:
            rq = self.rqs[self._select_cpu(th)]
            th.runnable = True
            self._enqueue(rq, th)
        self._update(rq, th)
        self._finish()

    def _block(self, th: Thread) -> None:
        th.seq += 1
        th.done_ev = None
        th.work_left = None
        th.resched_every_s = None
        th.pinned = False
        th.demand = 0.0
        if not th.runnable:
            return
        rq = self.rqs[th.cpu]  # type: ignore[index]
        self._dequeue(rq, th)
        th.runnable = False
        self._update(rq, None)
        self._finish()


    def _recompute(self, rq: RunQueue, waker: Thread | None) -> None:
        """Settle rq, recompute its rates, apply them, and re-arm its timer."""
        now = self.env.now
        self._settle(rq, now)
        throttled = self._rt_limited and rq.nr_rt > 0 and len(rq.cfs) > 0 and self._is_throttled(rq)
        rq.throttled = throttled
        if rq.pinned:
            keep = []
            for p in rq.pinned:
                if (p.pinned and p.runnable and p.cpu == rq.idx and p.pin_until > now + EPS
                        and p.demand > 0.0 and not (throttled and p.is_rt)):
                    keep.append(p)
                else:
                    p.pinned = False
            rq.pinned = keep
        s = self._allocate(rq, throttled)
        if waker is not None and self._defer and waker.is_rt and waker.cpu == rq.idx:
            newpin = False
            for v in rq.running:
                if (v.pinned or v.resched_every_s is None or v.rate_since >= now or not v.runnable
                        or v.cpu != rq.idx or v is waker):
                    continue
                nr = v.new_rate if v.stamp == s else 0.0
                if nr < v.rate - EPS and (not v.is_rt or waker.prio > v.prio):
                    v.pinned = True
                    v.pin_rate = min(v.rate, v.demand)
                    v.pin_until = self._next_resched(v, now)
                    rq.pinned.append(v)
                    newpin = True
            if newpin:
                s = self._allocate(rq, throttled)
        t_next = self._apply(rq, s, now)     # earliest run() completion on rq
        if rq.cfs_cap <= 0.0:
            if rq.nocfs_since is None:
                rq.nocfs_since = now
        elif rq.nocfs_since is not None:
            rq.nocfs_since = None
        if rq.nr_cfs_mobile and rq.cfs_cap <= 0.0:
            self._note_starved(rq, now)
        if self._starved and rq.cfs_cap > 0.0:
            self._rearm_starved(rq, now)
        # _arm_cpu_timer() with the completions already scanned by _apply() (nothing above
        # changed a rate, a work_left or a pin since)
        if rq.pinned or (self._rt_limited and rq.nr_rt and rq.cfs):
            t_next = self._next_edge(rq, now, t_next)
        self._set_cpu_timer(rq, t_next, now)

    @staticmethod
    def _next_resched(v: Thread, now: float) -> float:
        """Next cond_resched() point start + k * resched_every_s strictly after now."""
        r = v.resched_every_s
        assert r is not None and r > 0.0
        t = v.seg_start + (math.floor((now - v.seg_start) / r) + 1) * r
        if t <= now + EPS:
            t += r
        return t


    def cancel_run(self, th: Thread) -> bool:
        """Fire th's pending run() event now with value False (e.g. a page fault cut short by
        SIGKILL); returns False when th has no pending run()."""
        if th.done_ev is None or not th.runnable:
            return False
        self._settle(self.rqs[th.cpu], self.env.now)  # type: ignore[index]
        self._complete(th, False)
        self._arm_cpu_timer(self.rqs[th.cpu], self.env.now)  # type: ignore[index]
        return True


    def _update(self, rq: RunQueue, waker: Thread | None) -> None:
        self._recompute(rq, waker)
        if rq.nr_rt_mobile and rq.rt_exhausted and not rq.throttled:
            self._push_rt(rq)

    def _finish(self) -> None:
        """End of one external change: pull_rt_task() and RT budget changes on the other CPUs."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._pull_pending or self._budget_dirty:
                if self._pull_pending:
                    self._pull_pending = False
                    for rq in self.rqs:
                        if rq.nr_rt_mobile and rq.rt_exhausted and not rq.throttled:
                            self._push_rt(rq)
                if self._budget_dirty:
                    # another CPU became RT-idle or RT-busy: budgets under rt_runtime_share changed
                    self._budget_dirty = False
                    if self._rt_limited and self._share:
                        for rq in self.rqs:
                            if rq.nr_rt and rq.cfs:
                                self._update(rq, None)
        finally:
            self._flushing = False


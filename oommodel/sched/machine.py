"""Fluid (GPS) CPU scheduler on SimPy: per-CPU run queues, class order RT > CFS, as of v4.19.

Event-driven: a CPU changes state only when a thread calls run/spin/block/sleep/set_attr/exit or when
its own single pending timer fires (earliest run() completion, RT throttle start, RT period end,
deferred preemption point). Between events every runnable thread receives CPU at a constant *rate*, and
CPU time is settled lazily (cpu_time += rate * elapsed), so a spinning thread costs no events.

Cost per event (none of this changes what is computed): when a CPU timer ends one run() segment and
nothing else is queued for that instant, the waiting process is resumed inside the timer callback
instead of through a second SimPy event (it would have been the very next event anyway); and a timer
whose only news is the end of run() segments does not rebuild the CPU's rates when a rebuild could not
change them (see _rates_hold). Outcome.sim_events counts the SimPy events actually processed.

Rates on one CPU (kernel/sched/core.c:pick_next_task() class order):

1. RT (kernel/sched/rt.c): priorities highest first. Within a priority, SCHED_FIFO threads in run-queue
   order take min(demand, capacity left); a thread that wakes goes to the tail of its priority and a
   runnable thread keeps its place. SCHED_RR threads of that priority then share what is left by
   equal-weight water-filling: a fluid stand-in for the 100 ms sched_rr_timeslice rotation.
   (Simplification: at one priority, FIFO threads are served before RR threads; in the kernel a FIFO
   thread at the head never yields to an RR one and an RR thread only rotates behind it, so FIFO ends up
   ahead anyway.)
2. CFS (kernel/sched/fair.c): the capacity left is shared in proportion to sched_prio_to_weight
   (SCHED_NORMAL/SCHED_BATCH) and WEIGHT_IDLEPRIO = 3 (SCHED_IDLE), water-filling with demand caps.
   This is the long-run share CFS converges to; sysctl_sched_latency slices are not modelled.
3. Anything left is idle.

RT throttling, kernel/sched/rt.c:sched_rt_runtime_exceeded() as of v4.19: per CPU, RT time consumed in
the current period (periods aligned at multiples of rt_period from t=0) is accounted exactly. When it
reaches the budget the RT class on that CPU gets rate 0 until the period ends. The budget is
rt_runtime, or with rt_runtime_share min(period, rt_runtime + n * rt_runtime / ncpus) where n is the
number of *other* CPUs with no runnable RT thread: a stated simplification of do_balance_runtime()
borrowing 1/n of each RT-idle CPU's runtime. Simplifications: (a) throttling happens only while a
non-RT thread is runnable on the CPU: otherwise the throttled window would only idle the CPU, so the RT
thread keeps it (and no events are scheduled); (b) rt_time restarts at 0 at each period boundary
(do_sched_rt_period_timer() subtracts one runtime per period, which is the same whenever the CPU
actually throttled); (c) a budget change caused by another CPU's RT activity is applied at that instant.

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

Placement (kernel/sched/rt.c:select_task_rq_rt()/cpupri, kernel/sched/fair.c:select_task_rq_fair(),
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

Not modelled: SCHED_DEADLINE and the stop class, hard/soft interrupts, CFS slices and wakeup
granularity (SCHED_IDLE is only its weight 3, which a nice-0 thread beats 1024:3), idle-CPU newidle
balancing apart from the rules above, NUMA and capacity differences between CPUs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import simpy
from simpy.events import Event, Process, Timeout

from oommodel.sched.attrs import MachineSpec, SchedAttr, SchedPolicy

_EPS = 1e-12          # capacity / time tolerance
_WORK_EPS = 1e-12     # remaining work at or below this is done
_RT_EPS = 1e-9        # RT budget tolerance (1 ns of CPU time)
_INF = math.inf
_LAZY = 2             # SimPy priority after NORMAL (1): runs once everything else of the instant has


class Thread:
    """Runtime state of one schedulable thread (task_struct's scheduler part)."""

    __slots__ = (
        "name", "group", "tid", "attr", "allowed", "cpu", "runnable", "demand",
        "rate", "cpu_time", "work_left", "done_ev", "resched_every_s", "seg_start", "rate_since",
        "pinned", "pin_rate", "pin_until", "starve_since", "balance_pending", "exited",
        "is_rt", "is_fifo", "prio", "weight", "mobile", "stamp", "new_rate", "trace_t0", "seq",
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
        self._set_attr(attr)

    def _set_attr(self, attr: SchedAttr) -> None:
        self.attr = attr
        self.is_rt = attr.is_rt
        self.is_fifo = attr.policy is SchedPolicy.FIFO
        self.prio = attr.rt_priority
        self.weight = attr.weight

    def __repr__(self) -> str:
        return (f"Thread({self.name!r}, tid={self.tid}, {self.attr}, cpu={self.cpu}, "
                f"runnable={self.runnable}, demand={self.demand}, rate={self.rate:.6g})")


class _RunQueue:
    """One CPU's run queue (struct rq with its rt_rq and cfs_rq), plus its single pending timer."""

    __slots__ = (
        "idx", "rt_queues", "rt_prios", "nr_rt", "nr_rt_mobile", "cfs", "cfs_weight", "nr_cfs_mobile",
        "running", "new", "pinned", "last", "rt_rate", "rt_time", "pidx", "throttled", "cfs_cap",
        "rt_exhausted", "gen", "timer_at", "on_timer",
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
        self.gen = 0
        self.timer_at: float | None = None
        self.on_timer: Callable[[simpy.Event], None] | None = None

    @property
    def nr_running(self) -> int:
        return self.nr_rt + len(self.cfs)


_PROCESS_RESUME = Process._resume


def _resumes_one_process(ev: simpy.Event | None) -> bool:
    """ev's only callback resumes a SimPy process (a model thread waiting on its run())."""
    if ev is None:
        return False
    cbs = ev.callbacks
    return cbs is not None and len(cbs) == 1 and getattr(cbs[0], "__func__", None) is _PROCESS_RESUME


def _pin_due(pinned: list[Thread], now: float) -> bool:
    """Some deferred preemption point on this CPU is due now."""
    for p in pinned:
        if p.pin_until <= now + _EPS:
            return True
    return False


class Machine:
    """The CPUs of one simulated machine; all scheduler state of one run lives here."""

    def __init__(self, env: simpy.Environment, spec: MachineSpec, trace: bool = False) -> None:
        self.env = env
        self.spec = spec
        self.rqs = [_RunQueue(i) for i in range(spec.cpus)]
        for rq in self.rqs:
            rq.on_timer = self._make_cpu_timer(rq)
        self.threads: list[Thread] = []
        self.trace: list[tuple[str, int, float, float, float]] = []
        self.events_scheduled = 0
        self._trace_on = trace
        self._all = tuple(range(spec.cpus))
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

    def spawn(self, name: str, group: str, attr: SchedAttr, allowed: Sequence[int] | None = None) -> Thread:
        """A new thread, blocked (no demand); allowed None = all CPUs."""
        if allowed is None:
            cpus = self._all
        else:
            cpus = tuple(sorted(set(int(c) for c in allowed)))
            if not cpus or cpus[0] < 0 or cpus[-1] >= self.spec.cpus:
                raise ValueError(f"{name}: allowed CPUs {list(allowed)} not a non-empty subset of 0..{self.spec.cpus - 1}")
        th = Thread(name, group, len(self.threads), attr, cpus)
        self.threads.append(th)
        return th

    def run(self, th: Thread, work_s: float, resched_every_s: float | None = None) -> simpy.Event:
        """th needs work_s CPU-seconds; the event succeeds at the instant it has received them."""
        if th.exited:
            self._check_alive(th)
        ev = Event(self.env)               # env.event() without the BoundClass lookup
        self.events_scheduled += 1
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

    def block(self, th: Thread) -> None:
        """th leaves the run queue (sleeping, or waiting on a lock)."""
        self._check_alive(th)
        self._block(th)

    def sleep(self, th: Thread, seconds: float) -> simpy.Event:
        """Block th and return a timer that fires after `seconds` (the caller then wakes it)."""
        self._check_alive(th)
        self._block(th)
        self.events_scheduled += 1
        return self.env.timeout(max(0.0, seconds))

    def sleep_jiffies(self, th: Thread, n: int = 1) -> simpy.Event:
        """schedule_timeout(n): block until the n-th timer tick strictly after now."""
        self._check_alive(th)
        self._block(th)
        now = self.env.now
        self.events_scheduled += 1
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
        """AssertionError unless: per-CPU rates sum <= 1, runnable threads on allowed CPUs, one queue each."""
        seen: dict[int, int] = {}
        for rq in self.rqs:
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
            th.work_left = work
            th.resched_every_s = resched
            th.seg_start = now
            self._set_cpu_timer(rq, self._next_cpu_event(rq, now), now)
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

    def _enqueue(self, rq: _RunQueue, th: Thread, head: bool = False) -> None:
        """Put th at the tail (or head) of its class queue on rq (enqueue_task())."""
        self._settle(rq, self.env.now)
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

    def _dequeue(self, rq: _RunQueue, th: Thread) -> None:
        """Take th off rq (dequeue_task()); its rate is zeroed by the next recompute of rq."""
        self._settle(rq, self.env.now)
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

    def _select_cpu(self, th: Thread) -> int:
        """Wake-up placement (select_task_rq_rt() / select_task_rq_fair(), simplified; see module doc)."""
        allowed = th.allowed
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

    # ------------------------------------------------------------------ rate computation

    def _settle(self, rq: _RunQueue, now: float) -> None:
        """Integrate rate x elapsed into cpu_time / work_left / rt_time since rq.last."""
        dt = now - rq.last
        if dt <= 0.0:
            return
        for th in rq.running:
            r = th.rate * dt
            th.cpu_time += r
            if th.work_left is not None:
                th.work_left -= r
        if self._rt_limited:
            pidx = int(now / self._period + 1e-9)
            if pidx != rq.pidx:
                rq.rt_time = max(0.0, rq.rt_rate * (now - pidx * self._period))
                rq.pidx = pidx
            else:
                rq.rt_time += rq.rt_rate * dt
        rq.last = now

    def _compute_budget(self) -> float:
        """RT runtime available to a CPU that has RT threads (do_balance_runtime(), simplified).

        Only _n_rt_idle changes it, so _enqueue()/_dequeue() refresh the cached `_budget_s`
        whenever a CPU becomes RT-idle or RT-busy; readers use the cache.
        """
        if not self._share:
            return self._runtime
        return min(self._period, self._runtime + self._n_rt_idle * self._runtime / self.spec.cpus)

    def _is_throttled(self, rq: _RunQueue) -> bool:
        if not self._rt_limited or not rq.nr_rt or not rq.cfs:
            return False
        budget = self._budget_s
        if budget >= self._period - _EPS:
            return False
        return rq.rt_time >= budget - _RT_EPS

    def _allocate(self, rq: _RunQueue, throttled: bool) -> int:
        """Build rq.new with new_rate set; returns the stamp marking this allocation."""
        self._stamp += 1
        s = self._stamp
        new = rq.new
        new.clear()
        cap = 1.0
        for p in rq.pinned:
            r = p.pin_rate
            p.new_rate = r
            p.stamp = s
            new.append(p)
            cap -= r
        rq.rt_exhausted = False
        if not throttled and rq.nr_rt and cap > _EPS:
            for prio in rq.rt_prios:
                rr: list[Thread] | None = None
                for th in rq.rt_queues[prio]:
                    if th.pinned or th.demand <= 0.0:
                        continue
                    if th.is_fifo:
                        if cap <= _EPS:
                            break
                        d = th.demand
                        r = d if d < cap else cap
                        cap -= r
                        th.new_rate = r
                        th.stamp = s
                        new.append(th)
                    elif rr is None:
                        rr = [th]
                    else:
                        rr.append(th)
                if rr is not None and cap > _EPS:
                    cap = self._waterfill(rr, cap, s, new, False)
                if cap <= _EPS:
                    rq.rt_exhausted = True
                    break
        rq.cfs_cap = cap if cap > _EPS else 0.0
        if cap > _EPS and rq.cfs:
            items = [th for th in rq.cfs if th.demand > 0.0 and not th.pinned]
            if items:
                self._waterfill(items, cap, s, new, True)
        return s

    @staticmethod
    def _waterfill(items: list[Thread], cap: float, s: int, new: list[Thread], weighted: bool) -> float:
        """Share cap among items in proportion to weight (or equally), capped by demand; returns leftover."""
        total = 0
        capped = False
        for th in items:
            total += th.weight if weighted else 1
            if th.demand < 1.0:
                capped = True
        if capped:
            if weighted:
                items.sort(key=lambda t: t.demand / t.weight)
            else:
                items.sort(key=lambda t: t.demand)
        else:
            # demand 1 never binds: a share cap * w / W is at most cap <= 1.
            k = cap / total
            for th in items:
                th.new_rate = k * (th.weight if weighted else 1)
                th.stamp = s
                new.append(th)
            return 0.0
        n = len(items)
        for i in range(n):
            th = items[i]
            w = th.weight if weighted else 1
            if th.demand <= cap * w / total:
                th.new_rate = th.demand
                th.stamp = s
                new.append(th)
                cap -= th.demand
                total -= w
                continue
            k = cap / total
            for j in range(i, n):
                t2 = items[j]
                t2.new_rate = k * (t2.weight if weighted else 1)
                t2.stamp = s
                new.append(t2)
            return 0.0
        return cap if cap > 0.0 else 0.0

    def _recompute(self, rq: _RunQueue, waker: Thread | None) -> None:
        """Settle rq, recompute its rates, apply them, and re-arm its timer."""
        now = self.env.now
        self._settle(rq, now)
        throttled = self._rt_limited and rq.nr_rt > 0 and len(rq.cfs) > 0 and self._is_throttled(rq)
        rq.throttled = throttled
        if rq.pinned:
            keep = []
            for p in rq.pinned:
                if (p.pinned and p.runnable and p.cpu == rq.idx and p.pin_until > now + _EPS
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
                if nr < v.rate - _EPS and (not v.is_rt or waker.prio > v.prio):
                    v.pinned = True
                    v.pin_rate = min(v.rate, v.demand)
                    v.pin_until = self._next_resched(v, now)
                    rq.pinned.append(v)
                    newpin = True
            if newpin:
                s = self._allocate(rq, throttled)
        self._apply(rq, s, now)
        if rq.nr_cfs_mobile and rq.cfs_cap <= 0.0:
            self._note_starved(rq, now)
        if self._starved and rq.cfs_cap > 0.0:
            self._rearm_starved(rq, now)
        self._arm_cpu_timer(rq, now)

    @staticmethod
    def _next_resched(v: Thread, now: float) -> float:
        """Next cond_resched() point start + k * resched_every_s strictly after now."""
        r = v.resched_every_s
        assert r is not None and r > 0.0
        t = v.seg_start + (math.floor((now - v.seg_start) / r) + 1) * r
        if t <= now + _EPS:
            t += r
        return t

    def _apply(self, rq: _RunQueue, s: int, now: float) -> None:
        trace = self._trace_on
        for th in rq.running:
            if th.stamp != s:
                if trace and now > th.trace_t0:
                    self.trace.append((th.name, rq.idx, th.trace_t0, now, th.rate))
                th.rate = 0.0
                th.trace_t0 = now
        running: list[Thread] = []
        rt_rate = 0.0
        for th in rq.new:
            r = th.new_rate
            if r <= 0.0:
                continue
            if r != th.rate:
                if th.rate == 0.0:
                    th.rate_since = now
                elif trace and now > th.trace_t0:
                    self.trace.append((th.name, rq.idx, th.trace_t0, now, th.rate))
                th.rate = r
                th.trace_t0 = now
            th.starve_since = None
            running.append(th)
            if th.is_rt:
                rt_rate += r
        rq.running = running
        rq.rt_rate = rt_rate

    # ------------------------------------------------------------------ timers

    def _arm_cpu_timer(self, rq: _RunQueue, now: float) -> None:
        """Keep exactly one pending timer per CPU at its earliest future event (stale ones are ignored)."""
        self._set_cpu_timer(rq, self._next_cpu_event(rq, now), now)

    def _next_cpu_event(self, rq: _RunQueue, now: float) -> float:
        """Earliest run() completion, deferred preemption point or RT throttle edge on rq."""
        t = _INF
        for th in rq.running:
            w = th.work_left
            if w is not None:
                tt = now + w / th.rate
                if tt < t:
                    t = tt
        for p in rq.pinned:
            if p.pin_until < t:
                t = p.pin_until
        if self._rt_limited and rq.nr_rt and rq.cfs:
            pend = (rq.pidx + 1) * self._period
            if rq.throttled:
                if pend < t:
                    t = pend
            elif rq.rt_rate > 0.0:
                budget = self._budget_s
                if budget < self._period - _EPS:
                    tt = min(now + (budget - rq.rt_time) / rq.rt_rate, pend)
                    if tt < t:
                        t = tt
        return t

    def _set_cpu_timer(self, rq: _RunQueue, t: float, now: float) -> None:
        if t == rq.timer_at:
            return
        rq.gen += 1
        if t == _INF:
            rq.timer_at = None
            return
        rq.timer_at = t
        ev = Timeout(self.env, t - now if t > now else 0.0, rq.gen)
        self.events_scheduled += 1
        ev.callbacks.append(rq.on_timer)  # type: ignore[arg-type]

    def _make_cpu_timer(self, rq: _RunQueue) -> Callable[[simpy.Event], None]:
        def on_timer(ev: simpy.Event) -> None:
            if ev.value != rq.gen:
                return  # stale: superseded by a later recompute
            rq.timer_at = None
            now = self.env.now
            self._settle(rq, now)
            done = [th for th in rq.running
                    if th.work_left is not None and (th.work_left <= _WORK_EPS or now + th.work_left / th.rate <= now)]
            if done and self._rates_hold(rq, now):
                # Only run() segments ended: every rate stays as it is (see _complete), so
                # the allocation need not be rebuilt; the caller's next call will do it.
                lone = done[0] if len(done) == 1 else None
                if lone is not None and self.env.peek() > now and _resumes_one_process(lone.done_ev):
                    self._complete_lone(rq, lone, now)
                    return
                for th in done:
                    self._complete(th, None)
                self._arm_cpu_timer(rq, now)
                return
            for th in done:
                self._complete(th, None)
            self._update(rq, None)
            self._finish()
        return on_timer

    def _rates_hold(self, rq: _RunQueue, now: float) -> bool:
        """At a CPU timer where run() segments end: may the allocation stay as it is?

        Without RT throttling in play, yes unless a deferred preemption point is due. With RT
        and CFS threads on a throttling CPU the timer may also be the RT budget running out,
        so a recompute is skipped only when it would change nothing at all: the throttle
        state is unchanged, no thread is pinned, and none of the recompute's side effects
        (load_balance() timers for starved CFS threads, push_rt_task(), pending budget or
        pull work) has anything to do.
        """
        if not (self._rt_limited and rq.nr_rt and rq.cfs):
            return not _pin_due(rq.pinned, now)
        return (not rq.pinned
                and self._is_throttled(rq) == rq.throttled
                and not (rq.nr_cfs_mobile and rq.cfs_cap <= 0.0)
                and not (self._starved and rq.cfs_cap > 0.0)
                and not (rq.nr_rt_mobile and rq.rt_exhausted and not rq.throttled)
                and not self._pull_pending and not self._budget_dirty)

    def _complete_lone(self, rq: _RunQueue, th: Thread, now: float) -> None:
        """One run() ended and nothing else is due at this instant: resume its waiter in place.

        _complete() would schedule th's event at (now, NORMAL) and re-arm the CPU timer for a
        later instant; with nothing else queued at `now`, that event is the very next one SimPy
        would process, so processing it here (the same callbacks, in the same order, at the
        same simulated time) changes nothing but saves one trip through the event queue.
        Only for an event whose one callback resumes a process (the model's threads), so no
        StopSimulation of env.run(until=...) can be raised from inside this timer callback.
        The timer is armed first, as _complete() + _arm_cpu_timer() would have scheduled it
        after the event; if it would fire at `now` itself the ordinary path is taken.
        """
        w = th.work_left
        th.work_left = None
        t = self._next_cpu_event(rq, now)
        if t <= now:
            th.work_left = w
            self._complete(th, None)
            self._arm_cpu_timer(rq, now)
            return
        self._set_cpu_timer(rq, t, now)
        th.pinned = False    # end of the segment: a preemption point
        done = th.done_ev
        th.done_ev = None
        seq = th.seq
        done._ok = True
        done._value = None
        callbacks, done.callbacks = done.callbacks, None
        for callback in callbacks:
            callback(done)
        if th.seq == seq:
            self._lazy_idle_check(th, seq)

    def _complete(self, th: Thread, value: object) -> None:
        """End th's run() segment now and fire its event.

        The thread keeps its demand (and so its CPU) for the rest of this instant: its caller
        almost always makes the next call as soon as it resumes, and handing the CPU to the
        next thread for zero time would only cost a recompute and a stale timer. If no call
        came by the time the event's callbacks ran (the caller waits on a condition, or does
        something else), a lazy check after every other event of this instant drops the demand.
        """
        th.work_left = None
        th.pinned = False    # end of the segment: a preemption point
        done = th.done_ev
        th.done_ev = None
        seq = th.seq
        if done is None:
            self._lazy_idle_check(th, seq)
            return
        done.callbacks.append(lambda _e: None if th.seq != seq else self._lazy_idle_check(th, seq))
        done.succeed(value)

    def cancel_run(self, th: Thread) -> bool:
        """Fire th's pending run() event now with value False (e.g. a page fault cut short by
        SIGKILL); returns False when th has no pending run()."""
        if th.done_ev is None or not th.runnable:
            return False
        self._settle(self.rqs[th.cpu], self.env.now)  # type: ignore[index]
        self._complete(th, False)
        self._arm_cpu_timer(self.rqs[th.cpu], self.env.now)  # type: ignore[index]
        return True

    def _lazy_idle_check(self, th: Thread, seq: int) -> None:
        ev = simpy.Event(self.env)
        ev._ok = True
        ev._value = None

        def check(_e: simpy.Event) -> None:
            if th.seq != seq or th.exited or not th.runnable or th.work_left is not None:
                return
            th.demand = 0.0      # keeps its run-queue place until the caller's next call
            rq = self.rqs[th.cpu]  # type: ignore[index]
            self._update(rq, None)
            self._finish()

        ev.callbacks.append(check)
        self.env.schedule(ev, priority=_LAZY)

    def _update(self, rq: _RunQueue, waker: Thread | None) -> None:
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

    # ------------------------------------------------------------------ migration

    def _push_rt(self, rq: _RunQueue) -> None:
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

    def _note_starved(self, rq: _RunQueue, now: float) -> None:
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
        self.events_scheduled += 1
        ev.callbacks.append(lambda _ev, th=th: self._load_balance(th))

    def _rearm_starved(self, rq: _RunQueue, now: float) -> None:
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
        if now < due - _EPS:
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

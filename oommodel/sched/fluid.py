"""Fluid (GPS) sharing of one CPU: rates by class order, CFS weights and water-filling.

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

Between events every runnable thread receives CPU at a constant rate; CPU time is settled lazily
(cpu_time += rate * elapsed), so a spinning thread costs no events.
"""

from __future__ import annotations

import simpy

from oommodel.sched.runqueue import RunQueue
from oommodel.sched.thread import Thread
from oommodel.sched.tolerance import EPS, INF, WORK_EPS


class FluidShare:
    """Settling and allocating one run queue's CPU (a mixin: the state lives on Machine)."""

    env: simpy.Environment
    trace: list[tuple[str, int, float, float, float]]
    _trace_on: bool
    _stamp: int
    _rt_limited: bool
    _period: float

    def _settle(self, rq: RunQueue, now: float) -> None:
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
            self._account_rt(rq, now, dt)
        rq.last = now

    def _account_rt(self, rq: RunQueue, now: float, dt: float) -> None:
        """rq.rt_time over the current RT period (kernel/sched/rt.c: rt_rq->rt_time, reset each
        sched_rt_period): a new period restarts it from what ran since the period began."""
        pidx = int(now / self._period + 1e-9)
        if pidx != rq.pidx:
            rq.rt_time = max(0.0, rq.rt_rate * (now - pidx * self._period))
            rq.pidx = pidx
        else:
            rq.rt_time += rq.rt_rate * dt

    def _settle_collect_done(self, rq: RunQueue, now: float) -> tuple[list[Thread], float]:
        """_settle(rq, now); returns the running threads whose run() work is done at `now`, and
        the earliest completion time `now + work_left / rate` among the others (INF: none).

        One pass over rq.running instead of three (settle, find the finished ones, then the
        earliest completion for the CPU timer): every CPU timer needs all three, and in the tail
        of a Handa run 64 SCHED_IDLE victims share one CPU. The arithmetic is _settle()'s and
        _next_cpu_event()'s, step by step (same products, same order; a minimum is exact), so
        every float comes out bit for bit the same.
        """
        dt = now - rq.last
        done: list[Thread] = []
        t = INF
        if dt <= 0.0:
            for th in rq.running:
                w = th.work_left
                if w is not None:
                    tt = now + w / th.rate
                    if w <= WORK_EPS or tt <= now:
                        done.append(th)
                    elif tt < t:
                        t = tt
            return done, t
        for th in rq.running:
            r = th.rate * dt
            th.cpu_time += r
            w = th.work_left
            if w is not None:
                w -= r
                th.work_left = w
                tt = now + w / th.rate
                if w <= WORK_EPS or tt <= now:
                    done.append(th)
                elif tt < t:
                    t = tt
        if self._rt_limited:
            self._account_rt(rq, now, dt)
        rq.last = now
        return done, t

    def _allocate(self, rq: RunQueue, throttled: bool) -> int:
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
        if not throttled and rq.nr_rt and cap > EPS:
            for prio in rq.rt_prios:
                rr: list[Thread] | None = None
                for th in rq.rt_queues[prio]:
                    if th.pinned or th.demand <= 0.0:
                        continue
                    if th.is_fifo:
                        if cap <= EPS:
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
                if rr is not None and cap > EPS:
                    cap = self._waterfill(rr, cap, s, new, False)
                if cap <= EPS:
                    rq.rt_exhausted = True
                    break
        rq.cfs_cap = cap if cap > EPS else 0.0
        if cap > EPS and rq.cfs:
            items = [th for th in rq.cfs if th.demand > 0.0 and not th.pinned]
            if items:
                self._waterfill(items, cap, s, new, True)
        return s

    @staticmethod
    def _waterfill(items: list[Thread], cap: float, s: int, new: list[Thread], weighted: bool) -> float:
        """Share cap among items in proportion to weight (or equally), capped by demand; returns leftover."""
        if weighted:
            total = sum([th.weight for th in items])     # ints: exact in any order
        else:
            total = len(items)
        capped = False
        for th in items:
            if th.demand < 1.0:
                capped = True
                break
        if capped:
            if weighted:
                items.sort(key=lambda t: t.demand / t.weight)
            else:
                items.sort(key=lambda t: t.demand)
        else:
            # demand 1 never binds: a share cap * w / W is at most cap <= 1.
            k = cap / total
            if weighted:
                for th in items:
                    th.new_rate = k * th.weight
                    th.stamp = s
            else:
                for th in items:
                    th.new_rate = k          # k * 1
                    th.stamp = s
            new.extend(items)
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


    def _apply(self, rq: RunQueue, s: int, now: float) -> float:
        """Give rq's threads their new rates (rq.new, stamp s) and settle rq.running; returns the
        earliest run() completion `now + work_left / rate` among them (INF: none), the loop of
        _next_cpu_event() done in this pass (same expression per thread; a minimum is exact).

        With a trace, each changed thread's segment is closed; without one that bookkeeping
        (trace_t0, read only by the trace) is skipped: in the tail of a Handa run every exit
        re-rates ~30 SCHED_IDLE victims."""
        trace = self.trace if self._trace_on else None
        for th in rq.running:
            if th.stamp != s:
                if trace is not None:
                    if now > th.trace_t0:
                        trace.append((th.name, rq.idx, th.trace_t0, now, th.rate))
                    th.trace_t0 = now
                th.rate = 0.0
        running: list[Thread] = []
        rt_rate = 0.0
        t = INF
        for th in rq.new:
            r = th.new_rate
            if r <= 0.0:
                continue
            if r != th.rate:
                if th.rate == 0.0:
                    th.rate_since = now
                elif trace is not None and now > th.trace_t0:
                    trace.append((th.name, rq.idx, th.trace_t0, now, th.rate))
                th.rate = r
                if trace is not None:
                    th.trace_t0 = now
            th.starve_since = None
            running.append(th)
            if th.is_rt:
                rt_rate += r
            w = th.work_left
            if w is not None:
                tt = now + w / r
                if tt < t:
                    t = tt
        rq.running = running
        rq.rt_rate = rt_rate
        return t

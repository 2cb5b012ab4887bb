"""Each CPU's single pending timer and the end of run() segments.

A CPU keeps exactly one pending SimPy timer, at its earliest future event: a run() completion, a
deferred preemption point, or an RT throttle edge; a timer superseded by a later recompute is stale
and ignored (it is no longer the run queue's `timer_ev`).

Cost per event (none of this changes what is computed): when a CPU timer ends one run() segment and
nothing else is queued for that instant, the waiting process is resumed inside the timer callback
instead of through a second SimPy event (it would have been the very next event anyway); and a timer
whose only news is the end of run() segments does not rebuild the CPU's rates when a rebuild could not
change them (see _rates_hold). Outcome.sim_events counts the SimPy events actually processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import simpy

from oommodel.sched.runqueue import RunQueue
from oommodel.sched.simpy_glue import fire_now, resumes_one_process, schedule_lazy, timeout_with_callback
from oommodel.sched.thread import Thread
from oommodel.sched.tolerance import EPS, INF


def _pin_due(pinned: list[Thread], now: float) -> bool:
    """Some deferred preemption point on this CPU is due now."""
    for p in pinned:
        if p.pin_until <= now + EPS:
            return True
    return False



class CpuTimers:
    """Per-CPU timers and run() completion (a mixin: the state lives on Machine)."""

    env: simpy.Environment
    rqs: list[RunQueue]
    _rt_limited: bool
    _period: float
    _budget_s: float
    _starved: dict[int, Thread]
    _pull_pending: bool
    _budget_dirty: bool

    if TYPE_CHECKING:
        def _settle(self, rq: RunQueue, now: float) -> None: ...
        def _settle_collect_done(self, rq: RunQueue, now: float) -> list[Thread]: ...
        def _is_throttled(self, rq: RunQueue) -> bool: ...
        def _update(self, rq: RunQueue, waker: Thread | None) -> None: ...
        def _finish(self) -> None: ...

    def _arm_cpu_timer(self, rq: RunQueue, now: float) -> None:
        """Keep exactly one pending timer per CPU at its earliest future event (stale ones are ignored)."""
        self._set_cpu_timer(rq, self._next_cpu_event(rq, now), now)

    def _next_cpu_event(self, rq: RunQueue, now: float) -> float:
        """Earliest run() completion, deferred preemption point or RT throttle edge on rq."""
        t = INF
        for th in rq.running:
            w = th.work_left
            if w is not None:
                tt = now + w / th.rate
                if tt < t:
                    t = tt
        if rq.pinned or (self._rt_limited and rq.nr_rt and rq.cfs):
            return self._next_edge(rq, now, t)
        return t

    def _next_edge(self, rq: RunQueue, now: float, t: float) -> float:
        """min(t, the deferred preemption points and the RT throttle edge on rq)."""
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
                if budget < self._period - EPS:
                    tt = min(now + (budget - rq.rt_time) / rq.rt_rate, pend)
                    if tt < t:
                        t = tt
        return t

    def _set_cpu_timer(self, rq: RunQueue, t: float, now: float) -> None:
        """Arm rq's timer at t, the next CPU event computed from the whole run queue at `now`."""
        rq.armed_at = now
        if t == rq.timer_at:
            return
        if t == INF:
            rq.timer_at = None
            rq.timer_ev = None
            return
        rq.timer_at = t
        rq.timer_ev = timeout_with_callback(self.env, t - now if t > now else 0.0, rq.on_timer)  # type: ignore[arg-type]

    def _make_cpu_timer(self, rq: RunQueue) -> Callable[[simpy.Event], None]:
        def on_timer(ev: simpy.Event) -> None:
            if ev is not rq.timer_ev:
                return  # stale: superseded by a later recompute
            rq.timer_ev = None
            rq.timer_at = None
            rq.armed_at = None
            now = self.env.now
            done, t_rest = self._settle_collect_done(rq, now)
            if done and ((not rq.pinned and not (self._rt_limited and rq.nr_rt and rq.cfs))
                         or self._rates_hold(rq, now)):   # the first test: _rates_hold()'s common case
                # Only run() segments ended: every rate stays as it is (see _complete), so
                # the allocation need not be rebuilt; the caller's next call will do it.
                lone = done[0] if len(done) == 1 else None
                if lone is not None and self.env.peek() > now and resumes_one_process(lone.done_ev):
                    self._complete_lone(rq, lone, now, t_rest)
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

    def _rates_hold(self, rq: RunQueue, now: float) -> bool:
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

    def _complete_lone(self, rq: RunQueue, th: Thread, now: float, t_rest: float) -> None:
        """One run() ended and nothing else is due at this instant: resume its waiter in place.

        _complete() would schedule th's event at (now, NORMAL) and re-arm the CPU timer for a
        later instant; with nothing else queued at `now`, that event is the very next one SimPy
        would process, so processing it here (the same callbacks, in the same order, at the
        same simulated time) changes nothing but saves one trip through the event queue.
        Only for an event whose one callback resumes a process (the model's threads), so no
        StopSimulation of env.run(until=...) can be raised from inside this timer callback.
        The timer is armed first, as _complete() + _arm_cpu_timer() would have scheduled it
        after the event; if it would fire at `now` itself the ordinary path is taken.

        `t_rest` is the earliest completion among rq's other running threads (from the settle
        pass), so the next CPU event without th needs no second pass over rq.running; the timer
        armed with it is exact (`rq.armed_at`), which th's own next run() uses (see _start).
        """
        t = t_rest
        if rq.pinned or (self._rt_limited and rq.nr_rt and rq.cfs):
            t = self._next_edge(rq, now, t)
        if t <= now:
            self._complete(th, None)
            self._arm_cpu_timer(rq, now)
            return
        th.work_left = None
        self._set_cpu_timer(rq, t, now)
        th.pinned = False    # end of the segment: a preemption point
        done = th.done_ev
        th.done_ev = None
        seq = th.seq
        fire_now(done)  # type: ignore[arg-type]
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
        self.rqs[th.cpu].armed_at = None  # type: ignore[index]   # th may have been the next event
        done = th.done_ev
        th.done_ev = None
        seq = th.seq
        if done is None:
            self._lazy_idle_check(th, seq)
            return
        done.callbacks.append(lambda _e: None if th.seq != seq else self._lazy_idle_check(th, seq))
        done.succeed(value)

    def _lazy_idle_check(self, th: Thread, seq: int) -> None:
        def check(_e: simpy.Event) -> None:
            if th.seq != seq or th.exited or not th.runnable or th.work_left is not None:
                return
            th.demand = 0.0      # keeps its run-queue place until the caller's next call
            rq = self.rqs[th.cpu]  # type: ignore[index]
            self._update(rq, None)
            self._finish()

        schedule_lazy(self.env, check)


"""Timers that expire in TIMER softirq context on the CPU that armed them, and `ksoftirqd`.

Models kernel/time/timer.c:add_timer() + kernel/softirq.c:invoke_softirq() as of v4.19–v6.4.
With `machine.softirq: inline` a timer fires at its expiry (softirqs run on irq exit,
whatever the CPU is running). With `ksoftirqd_defer` ("softirq: Let ksoftirqd do its job",
4.9 .. reverted in v6.5-rc1 by d15121be7485): if `ksoftirqd/N` is already awake when the
timer expires (it was woken earlier because softirq work overran 2 ms / 10 restarts; the
model draws that with `machine.ksoftirqd_awake_p`), the expiry is left to it, and
`ksoftirqd/N` is an ordinary SCHED_NORMAL nice-0 thread pinned to CPU N: a SCHED_FIFO
thread that monopolises N keeps every timer of N from firing (reference: real-kernel-6.1.md §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from oommodel.sched import SchedAttr, SchedPolicy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState

SOFTIRQ_WORK_S = 20e-6  # one run of __do_softirq for the expired timers


def add_timer(state: RunState, cpu: int, expires: float) -> simpy.Event:
    """kernel/time/timer.c:add_timer() on `cpu`: an event that succeeds when the timer's callback runs."""
    env = state.env
    ev = env.event()
    if not state.softirq.defer:
        env.timeout(max(0.0, expires - env.now)).callbacks.append(lambda _e: ev.succeed())
        return ev
    env.timeout(max(0.0, expires - env.now)).callbacks.append(lambda _e: _expire(state, cpu, ev))
    return ev


def stuck_cpus(state: RunState) -> list[int]:
    """CPUs whose timers wait for a ksoftirqd that has not run yet."""
    return [cpu for cpu, evs in state.softirq.pending.items() if evs]


def _expire(state: RunState, cpu: int, ev: simpy.Event) -> None:
    """The timer expired: kernel/softirq.c:invoke_softirq() runs it now, or leaves it to an awake ksoftirqd/N."""
    si = state.softirq
    if not si.awake.get(cpu):
        seq = si.seq.get(cpu, 0)
        si.seq[cpu] = seq + 1
        if si.awake_p <= 0.0 or state.streams.uniform("ksoftirqd_awake", cpu, seq) >= si.awake_p:
            ev.succeed()
            return
        si.awake[cpu] = True
        si.pending[cpu] = [ev]
        state.env.process(run_ksoftirqd(state, cpu))
    else:
        si.pending[cpu].append(ev)


def run_ksoftirqd(state: RunState, cpu: int):
    """kernel/softirq.c:run_ksoftirqd(): handle the pending softirqs once it gets the CPU."""
    machine = state.machine
    si = state.softirq
    th = si.threads.get(cpu)
    if th is None:
        th = machine.spawn(f"ksoftirqd/{cpu}", "ksoftirqd", SchedAttr(SchedPolicy.NORMAL), (cpu,))
        si.threads[cpu] = th
    yield machine.run(th, SOFTIRQ_WORK_S)
    machine.block(th)
    pending, si.pending[cpu] = si.pending[cpu], []
    si.awake[cpu] = False
    for ev in pending:
        ev.succeed()

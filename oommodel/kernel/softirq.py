"""Timers that expire in TIMER softirq context on the CPU that armed them, and `ksoftirqd`.

Models kernel/time/timer.c:add_timer() + kernel/softirq.c:invoke_softirq() as of v4.19–v6.4.
With `machine.softirq: inline` a timer fires at its expiry (softirqs run on irq exit,
whatever the CPU is running). With `ksoftirqd_defer` ("softirq: Let ksoftirqd do its job",
4.9 .. reverted in v6.5-rc1 by d15121be7485): if `ksoftirqd/N` is already awake when the
timer expires (it was woken earlier because softirq work overran 2 ms / 10 restarts and has
not run since: `ksoftirqd_awake_p_at_expiry`, rate `machine.ksoftirqd_wake_hz`, or a fixed
`machine.ksoftirqd_awake_p`), the expiry is left to it, and
`ksoftirqd/N` is an ordinary SCHED_NORMAL nice-0 thread pinned to CPU N: a SCHED_FIFO
thread that monopolises N keeps every timer of N from firing (reference: real-kernel-6.1.md §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math

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


def ksoftirqd_awake_p_at_expiry(state: RunState, cpu: int) -> float:
    """Probability that `ksoftirqd/cpu` is awake and has not run yet when a timer of `cpu` expires.

    Models kernel/softirq.c as of v4.9-v6.4: `__do_softirq()` wakes `ksoftirqd/N`
    (`wakeup_softirqd()`) when pending softirq work outlasts MAX_SOFTIRQ_TIME (2 ms) or
    MAX_SOFTIRQ_RESTART (10) rounds, or is raised again while the thread runs; the machine's
    softirq load makes that happen at a rate of `machine.ksoftirqd_wake_hz` per CPU (a Poisson
    process; to be calibrated from the kernel boots). A woken `ksoftirqd/N` (SCHED_NORMAL) runs
    at once and sleeps again wherever CFS gets CPU, so it is still awake at the expiry only if it
    was woken within the current stretch in which RT threads have left CFS no capacity on N
    (`Machine.cfs_starved_since`): 1 - exp(-rate * stretch). Lazy: no event per wake-up, so the
    cost does not grow with simulated time. `machine.ksoftirqd_awake_p`, when set, replaces this
    by a fixed probability.
    """
    si = state.softirq
    if si.awake_p is not None:
        return si.awake_p
    since = state.machine.cfs_starved_since(cpu)
    if since is None or si.wake_hz <= 0.0:
        return 0.0
    return -math.expm1(-si.wake_hz * (state.env.now - since))


def _expire(state: RunState, cpu: int, ev: simpy.Event) -> None:
    """The timer expired: kernel/softirq.c:invoke_softirq() runs it now, or leaves it to an awake ksoftirqd/N."""
    si = state.softirq
    if not si.awake.get(cpu):
        seq = si.seq.get(cpu, 0)
        si.seq[cpu] = seq + 1
        p = ksoftirqd_awake_p_at_expiry(state, cpu)
        if p <= 0.0 or state.streams.uniform("ksoftirqd_awake", cpu, seq) >= p:
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

"""Timers that expire in TIMER softirq context on the CPU that armed them, and `ksoftirqd`.

Models kernel/time/timer.c:add_timer() + kernel/softirq.c:invoke_softirq() as of v4.19–v6.4.
With `machine.softirq: inline` a timer fires at its expiry (softirqs run on irq exit,
whatever the CPU is running). With `ksoftirqd_defer` ("softirq: Let ksoftirqd do its job",
4.9 .. reverted in v6.5-rc1 by d15121be7485): if `ksoftirqd/N` is already awake when the
timer expires (it was woken earlier because softirq work overran 2 ms / 10 restarts and has
not run since: `Softirq.ksoftirqd_awake_p_at_expiry`, rate `machine.ksoftirqd_wake_hz`, or a
fixed `machine.ksoftirqd_awake_p`), the expiry is left to it, and
`ksoftirqd/N` is an ordinary SCHED_NORMAL nice-0 thread pinned to CPU N: a SCHED_FIFO
thread that monopolises N keeps every timer of N from firing (reference: real-kernel-6.1.md §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math

import simpy

from oommodel.sched import SchedAttr, SchedPolicy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.world import World

SOFTIRQ_WORK_S = 20e-6  # one run of __do_softirq for the expired timers


class Softirq:
    __slots__ = ("world", "defer", "awake_p", "wake_hz", "_awake", "_pending", "_threads", "_seq")

    def __init__(self, world: World) -> None:
        self.world = world
        machine = world.sc.machine
        self.defer = machine.softirq == "ksoftirqd_defer"
        self.awake_p = None if machine.ksoftirqd_awake_p is None else float(machine.ksoftirqd_awake_p)
        self.wake_hz = float(machine.ksoftirqd_wake_hz)
        self._awake: dict[int, bool] = {}
        self._pending: dict[int, list[simpy.Event]] = {}
        self._threads: dict[int, object] = {}
        self._seq: dict[int, int] = {}

    def add_timer(self, cpu: int, expires: float) -> simpy.Event:
        """An event that succeeds when the timer's callback runs on `cpu`."""
        env = self.world.env
        ev = env.event()
        if not self.defer:
            env.timeout(max(0.0, expires - env.now)).callbacks.append(lambda _e: ev.succeed())
            return ev
        env.timeout(max(0.0, expires - env.now)).callbacks.append(lambda _e: self._expire(cpu, ev))
        return ev

    def stuck_cpus(self) -> list[int]:
        """CPUs whose timers wait for a ksoftirqd that has not run yet."""
        return [cpu for cpu, evs in self._pending.items() if evs]

    def ksoftirqd_awake_p_at_expiry(self, cpu: int) -> float:
        """Probability that `ksoftirqd/cpu` is awake and has not run yet when a timer of `cpu` expires.

        Models kernel/softirq.c as of v4.9-v6.4: `__do_softirq()` wakes `ksoftirqd/N`
        (`wakeup_softirqd()`) when pending softirq work outlasts MAX_SOFTIRQ_TIME (2 ms) or
        MAX_SOFTIRQ_RESTART (10) rounds, or is raised again while the thread runs; the machine's
        softirq load makes that happen at a rate of `machine.ksoftirqd_wake_hz` per CPU (a Poisson
        process; calibrated from the kernel boots). A woken `ksoftirqd/N` (SCHED_NORMAL) runs at once
        and sleeps again wherever CFS gets CPU, so it is still awake at the expiry only if it was
        woken while CFS has had no capacity on N, i.e. within the current stretch of RT
        monopoly (`Machine.cfs_starved_since`): 1 - exp(-rate * stretch). Lazy: no event per
        wake-up, so the cost does not grow with simulated time. `machine.ksoftirqd_awake_p`, when
        set, replaces this by a fixed probability.
        """
        if self.awake_p is not None:
            return self.awake_p
        since = self.world.machine.cfs_starved_since(cpu)
        if since is None or self.wake_hz <= 0.0:
            return 0.0
        return -math.expm1(-self.wake_hz * (self.world.env.now - since))

    def _expire(self, cpu: int, ev: simpy.Event) -> None:
        if not self._awake.get(cpu):
            seq = self._seq.get(cpu, 0)
            self._seq[cpu] = seq + 1
            p = self.ksoftirqd_awake_p_at_expiry(cpu)
            if p <= 0.0 or self.world.uniform("ksoftirqd_awake", cpu, seq) >= p:
                ev.succeed()
                return
            self._awake[cpu] = True
            self._pending[cpu] = [ev]
            self.world.env.process(self._ksoftirqd(cpu))
        else:
            self._pending[cpu].append(ev)

    def _ksoftirqd(self, cpu: int):
        """kernel/softirq.c:run_ksoftirqd(): handle the pending softirqs once it gets the CPU."""
        machine = self.world.machine
        th = self._threads.get(cpu)
        if th is None:
            th = machine.spawn(f"ksoftirqd/{cpu}", "ksoftirqd", SchedAttr(SchedPolicy.NORMAL), (cpu,))
            self._threads[cpu] = th
        yield machine.run(th, SOFTIRQ_WORK_S)
        machine.block(th)
        pending, self._pending[cpu] = self._pending[cpu], []
        self._awake[cpu] = False
        for ev in pending:
            ev.succeed()

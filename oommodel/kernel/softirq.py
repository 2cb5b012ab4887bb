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
    from oommodel.kernel.world import World

SOFTIRQ_WORK_S = 20e-6  # one run of __do_softirq for the expired timers


class Softirq:
    __slots__ = ("world", "defer", "awake_p", "_awake", "_pending", "_threads", "_seq")

    def __init__(self, world: World) -> None:
        self.world = world
        machine = world.sc.machine
        self.defer = machine.softirq == "ksoftirqd_defer"
        self.awake_p = float(machine.ksoftirqd_awake_p)
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

    def _expire(self, cpu: int, ev: simpy.Event) -> None:
        if not self._awake.get(cpu):
            seq = self._seq.get(cpu, 0)
            self._seq[cpu] = seq + 1
            if self.awake_p <= 0.0 or self.world.uniform("ksoftirqd_awake", cpu, seq) >= self.awake_p:
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

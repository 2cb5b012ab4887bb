"""One simulated machine for one run: builds the run state from a Scenario and a policy, runs it.

Everything a run touches is created fresh per `simulate()` call (kernel/state.py): no module or
class state, so runs are independent in any worker and any order. World only builds and runs:
the kernel functions live in the modules named after their kernel files, the counters and the
Outcome in counters.py.
"""

from __future__ import annotations

from typing import Any

import simpy
from simpy.core import EmptySchedule, StopSimulation

from oommodel.detector import AllocatorStallDetector
from oommodel.kernel.config import RunConfig
from oommodel.kernel.costs import RunCosts
from oommodel.kernel.accounting import build_outcome
from oommodel.kernel.exit import do_exit
from oommodel.kernel.locks import Mutex
from oommodel.kernel.memcontrol import try_charge_slowpath
from oommodel.kernel.mm import Mm
from oommodel.kernel.oom_domain import OomDomain
from oommodel.kernel.oom_reaper import start_oom_reaper
from oommodel.kernel.page_alloc import alloc_slowpath, touch_memory
from oommodel.kernel.stall import describe_stall
from oommodel.kernel.state import RunState, SoftirqState
from oommodel.kernel.task import Process
from oommodel.outcome import Outcome
from oommodel.policies.base import OomPolicy, ReaperKind
from oommodel.sched import Machine
from oommodel.sched.simpy_glue import FastClockEnvironment, process_until_stop, start_processes
from oommodel.streams import Streams

class CountingEnvironment(FastClockEnvironment):
    """A SimPy environment that counts the events it processes (Outcome.sim_events); its clock
    is read without a Python call (sched/simpy_glue.py:FastClockEnvironment).

    `run_until` is `run(until=event)` with the count kept in a local of its own loop
    (sched/simpy_glue.py:process_until_stop): an overridden `step()` would add a Python call to
    every event of the run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    def run_until(self, stop: simpy.Event) -> None:
        """Process events until `stop` is processed (something must trigger it: the horizon)."""
        if stop.callbacks is None:
            return
        stop.callbacks.append(StopSimulation.callback)
        try:
            self.processed += process_until_stop(self)
        except EmptySchedule:
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {stop}') from None


class World:
    """Builds the run state of one (scenario, policy, options, seed) and runs it to an Outcome."""

    def __init__(self, sc: Any, policy: OomPolicy, opts: dict[str, Any], seed: int, trace: bool = False,
                 detector: type = AllocatorStallDetector) -> None:
        """`detector` is the lockup detector class (pluggable: any class with the
        AllocatorStallDetector interface and a one-line `criterion`)."""
        self.sc = sc
        cfg = RunConfig.build(sc, policy, opts)
        streams = Streams(seed)
        self.env = env = CountingEnvironment()
        domain = OomDomain(env, sc.oom.domain, sc.oom.limit_mb) if sc.oom is not None else None
        self.state = state = RunState(
            env=env,
            cfg=cfg,
            policy=policy,
            streams=streams,
            machine=Machine(env, cfg.machine, trace=trace),
            costs=RunCosts.draw(sc.costs, sc.victim, streams),
            domain=domain,
            slowpath=try_charge_slowpath if domain is not None and domain.is_memcg else alloc_slowpath,
            oom_lock=Mutex(env, "oom_lock"),
            softirq=SoftirqState(defer=cfg.softirq_defer, awake_p=cfg.ksoftirqd_awake_p,
                                 wake_hz=cfg.ksoftirqd_wake_hz),
            stop=env.event(),
        )
        state.detector = detector(env, cfg.lockup_after_s, lambda: describe_stall(state))
        self._build_processes()
        order = streams.at_start("task_order").permutation(len(state.procs))
        state.scan_order = [state.procs[i] for i in order]
        state.reaper = start_oom_reaper(state) if policy.reaper is not ReaperKind.NONE else None

    # -- construction -------------------------------------------------------------------

    def _build_processes(self) -> None:
        env = self.env
        state = self.state
        sc = self.sc
        fractions = (sc.victim.memory.anon, sc.victim.memory.mlocked, sc.victim.memory.shared_file)
        pid = 0
        starts = []                 # (thread's life, its start time): started together (simpy_glue)
        for g in sc.groups:
            attr = g.sched.attr
            allowed = tuple(g.cpus) if g.cpus is not None else None
            # one stream per group and quantity, drawn in process order (all draws at once)
            rss_all = self._draw_n(g.rss_mb, g.count, "rss_mb", g.name)
            start_all = self._draw_n(g.start_s, g.count, "start_s", g.name)
            for i in range(g.count):
                pid += 1
                rss = float(rss_all[i])
                start = float(start_all[i])
                mm = Mm(env, pid, g.threads_per_process, fractions, state.costs.pgtable_mb_per_gb)
                proc = Process(env, pid, g.name, g.role, g.oom_score_adj, attr, allowed, mm)
                proc.start_s = start
                state.procs.append(proc)
                per_thread = rss / g.threads_per_process
                for t in range(g.threads_per_process):
                    th = state.machine.spawn(f"{g.name}/{pid}.{t}", g.name, attr, allowed)
                    proc.threads.append(th)
                    starts.append((task_main(state, proc, th, per_thread), start))
        start_processes(env, starts)    # a thread's life begins with sleeping until its start time

    def _draw_n(self, value: Any, n: int, *name: str) -> list[Any]:
        """n draws of a scenario number from the stream `name` (a plain number n times)."""
        if isinstance(value, (int, float)):
            return [value] * n
        return value.sample_n(self.state.streams.at_start(*name), n)

    # -- the run ------------------------------------------------------------------------

    def run(self) -> Outcome:
        env = self.env
        stop = self.state.stop
        env.timeout(self.state.cfg.horizon_s).callbacks.append(lambda _e: None if stop.triggered else stop.succeed())
        env.run_until(stop)
        self.state.detector.finish()
        return build_outcome(self.state, [g.name for g in self.sc.groups])


def task_main(state: RunState, proc: Process, th, target_mb: float):
    """A thread's life from its start time on (World starts it there: simpy_glue.start_processes):
    do its role's work, die when killed (or when done)."""
    if not proc.killed:
        if proc.role == "hog":
            state.machine.spin(th)                     # user-space busy loop, no memory
            yield proc.kill_event
        else:
            yield from touch_memory(state, proc, th, target_mb)
            if proc.role == "sleeper" and not proc.killed:
                state.machine.block(th)                # holds its memory, sleeps until killed
                yield proc.kill_event
    yield from do_exit(state, proc, th)

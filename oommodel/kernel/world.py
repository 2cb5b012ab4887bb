"""One simulated machine for one run: builds the runtime objects from a Scenario and a policy.

Everything a run touches lives here, created fresh per `simulate()` call: no module or class
state, so runs are independent in any worker and any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import simpy
from simpy.core import EmptySchedule, StopSimulation

from oommodel.kernel.costs import RunCosts
from oommodel.kernel.exit import do_exit
from oommodel.kernel.locks import Mutex
from oommodel.kernel.memcontrol import try_charge_slowpath
from oommodel.kernel.mm import MMF, Mm
from oommodel.kernel.oom_domain import OomDomain
from oommodel.kernel.oom_reaper import OomReaper, _sched_text
from oommodel.kernel.page_alloc import alloc_slowpath, touch_memory
from oommodel.kernel.softirq import Softirq
from oommodel.kernel.task import Process
from oommodel.detector import AllocatorStallDetector
from oommodel.outcome import Outcome
from oommodel.policies.base import OomPolicy, ReaperKind
from oommodel.sched import Machine, MachineSpec, SchedAttr
from oommodel.sched.topology import Topology
from oommodel.streams import Streams


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (Outcome.sim_events).

    `run_until` is `run(until=event)` with the count kept in a local of its own loop: an
    overridden `step()` would add a Python call to every event of the run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    def run_until(self, stop: simpy.Event) -> None:
        """Process events until `stop` is processed (something must trigger it: the horizon)."""
        if stop.callbacks is None:
            return
        stop.callbacks.append(StopSimulation.callback)
        step = super().step
        n = 0
        try:
            while True:
                n += 1
                step()
        except StopSimulation:
            pass
        except EmptySchedule:
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {stop}') from None
        finally:
            self.processed += n


@dataclass(slots=True)
class Counters:
    kills: int = 0
    extra_kills: int = 0
    handovers: int = 0
    reaper_attempts: int = 0
    oom_calls: int = 0
    memory_freed_mb: float = 0.0
    first_kill_s: float | None = None
    first_progress_s: float | None = None
    first_skip_by: str | None = None
    first_skip_s: float | None = None
    first_released_by: str | None = None
    panic: bool = False
    exits_pending: int = 0            # killed processes past mmput() whose last thread has not exited
    exits_pending_since: float = 0.0  # when exits_pending last changed
    exits_pending_max: int = 0        # the most pending for a positive stretch of time
    exit_delay_max_s: float = 0.0


def machine_topology(m: Any) -> Topology:
    """The scenario's `machine.topology` (a preset name or sockets/cores_per_socket/llc) as a value."""
    t = m.topology
    if isinstance(t, str):
        return Topology.preset(t, m.cpus)
    return Topology(t.sockets, t.cores_per_socket, t.llc)


class World:
    def __init__(self, sc: Any, policy: OomPolicy, opts: dict[str, Any], seed: int, trace: bool = False,
                 detector: type = AllocatorStallDetector) -> None:
        """`detector` is the lockup detector class (pluggable: any class with the
        AllocatorStallDetector interface and a one-line `criterion`)."""
        self.sc = sc
        self.policy = policy
        self.opts = opts
        self.exit_steps = policy.steps_for(opts)
        # do_exit() -> sched_move_task(): requeued at the tail and preempted at once (see do_exit_tail)
        self.exit_requeue = policy.exit_sched_move_resched and sc.machine.preempt == "full"
        self.streams = Streams(seed)
        self.env = env = CountingEnvironment()
        m = sc.machine
        self.machine = Machine(env, MachineSpec(
            cpus=m.cpus, hz=m.hz, preempt=m.preempt, rt_runtime_us=m.rt_runtime_us,
            rt_period_us=m.rt_period_us, rt_runtime_share=m.rt_runtime_share,
            balance_interval_s=m.balance_interval_ms / 1e3,
            topology=machine_topology(m),
        ), trace=trace)
        self.costs = RunCosts.draw(sc.costs, sc.victim, self.streams)
        self.domain = OomDomain(env, sc.oom.domain, sc.oom.limit_mb) if sc.oom is not None else None
        self.slowpath = try_charge_slowpath if self.domain is not None and self.domain.is_memcg else alloc_slowpath
        self.oom_lock = Mutex(env, "oom_lock")
        self.softirq = Softirq(self)
        self.detector = detector(env, sc.lockup_after_s, self.describe_stall)
        self.stats = Counters()
        self.victims: list[Process] = []
        self.skip_log: list[tuple[int, str, float]] = []   # (pid, by, time) each time MMF_OOM_SKIP is set on a victim
        self.touching: list = []
        self.recycled_mb = 0.0   # memory freed in this run and not faulted in again (costs.first_touch_ms_per_mb)
        self.procs: list[Process] = []
        self._build_processes()
        order = self.streams.rng("task_order").permutation(len(self.procs))
        self.scan_order = [self.procs[i] for i in order]
        self.reaper = OomReaper(self) if policy.reaper is not ReaperKind.NONE else None
        self.stop = env.event()
        self.sched_at_handover = sc.victim.sched_at_handover
        self._attrs: dict[str, SchedAttr] = {}

    def sched_attr(self, text: str) -> SchedAttr:
        attr = self._attrs.get(text)
        if attr is None:
            attr = self._attrs[text] = SchedAttr.parse(text)
        return attr

    # -- construction -------------------------------------------------------------------

    def _build_processes(self) -> None:
        env = self.env
        fractions = (self.sc.victim.memory.anon, self.sc.victim.memory.mlocked, self.sc.victim.memory.shared_file)
        pid = 0
        for g in self.sc.groups:
            attr = SchedAttr.parse(_sched_text(g.sched))
            allowed = tuple(g.cpus) if g.cpus is not None else None
            # one stream per group and quantity, drawn in process order (all draws at once)
            rss_all = self._draw_n(g.rss_mb, g.count, "rss_mb", g.name)
            start_all = self._draw_n(g.start_s, g.count, "start_s", g.name)
            for i in range(g.count):
                pid += 1
                rss = float(rss_all[i])
                start = float(start_all[i])
                mm = Mm(env, pid, g.threads_per_process, fractions, self.costs.pgtable_mb_per_gb)
                proc = Process(env, pid, g.name, g.role, g.oom_score_adj, attr, allowed, mm)
                proc.start_s = start
                self.procs.append(proc)
                per_thread = rss / g.threads_per_process
                for t in range(g.threads_per_process):
                    th = self.machine.spawn(f"{g.name}/{pid}.{t}", g.name, attr, allowed)
                    proc.threads.append(th)
                    env.process(self.task_main(proc, th, per_thread, start))

    def _draw_n(self, value: Any, n: int, *name: str) -> list[Any]:
        """n draws of a scenario number from the stream `name` (a plain number n times)."""
        if isinstance(value, (int, float)):
            return [value] * n
        return value.sample_n(self.streams.rng(*name), n)

    def task_main(self, proc: Process, th, target_mb: float, start_s: float):
        """A thread's life: start, do its role's work, die when killed (or when done)."""
        if start_s > 0.0:
            yield self.env.timeout(start_s)
        if not proc.killed:
            if proc.role == "hog":
                self.machine.spin(th)                      # user-space busy loop, no memory
                yield proc.kill_event
            else:
                yield from touch_memory(self, proc, th, target_mb)
                if proc.role == "sleeper" and not proc.killed:
                    self.machine.block(th)                 # holds its memory, sleeps until killed
                    yield proc.kill_event
        yield from do_exit(self, proc, th)

    # -- events the kernel code reports ---------------------------------------------------

    def uniform(self, *name: Any) -> float:
        return float(self.streams.rng(*name).random())

    def mark_oom_victim(self, victim: Process, th) -> None:
        """Models mm/oom_kill.c:mark_oom_victim() + wake_oom_reaper()/queue_oom_reaper()."""
        victim.oom_victim = True
        victim.mm.flags |= MMF.MMF_OOM_VICTIM
        if self.policy.victim_list_backoff:
            victim.in_victim_list = True
            victim.last_score = victim.mm.badness_mb()
            victim.last_score_drop = self.env.now
        self.victims.append(victim)
        if self.reaper is None:
            return
        delay = self.policy.reaper_delay_jiffies_per_hz
        cpu = th.cpu if th.cpu is not None else th.allowed[0]
        if delay <= 0.0:
            self.reaper.queue_victim(victim, waker_cpu=cpu)
            return
        # v5.18+: add_timer(OOM_REAPER_DELAY) on the CPU that runs the OOM killer
        hz = self.sc.machine.hz
        timer = self.softirq.add_timer(cpu, self.machine.next_tick(self.env.now, int(round(delay * hz))))
        self.reaper.timer_pending = True

        def fire(_e, victim=victim, cpu=cpu):
            self.reaper.timer_pending = False
            if not victim.mm.has(MMF.MMF_OOM_SKIP):
                self.reaper.queue_victim(victim, waker_cpu=cpu)   # wake_oom_reaper() in the timer softirq
        timer.callbacks.append(fire)

    def oom_kill_process(self, victim: Process, th) -> None:
        """Models mm/oom_kill.c:oom_kill_process() / __oom_kill_process(), v4.19."""
        now = self.env.now
        st = self.stats
        if any(v.mm.badness_mb() > 1e-6 for v in self.victims):
            st.extra_kills += 1
        st.kills += 1
        if st.first_kill_s is None:
            st.first_kill_s = now
        victim.killed = True
        victim.kill_time = now
        for t in victim.threads:
            victim.cpu_at_kill[t.tid] = self.machine.cpu_time(t)
        p = self.sc.mmap_sem.writer_at_kill_p
        if p > 0.0 and self.uniform("mmap_sem_writer", victim.pid) < p:
            hold_ms = float(self.streams.draw(self.sc.mmap_sem.writer_hold_ms, "writer_hold_ms", victim.pid))
            if hold_ms > 0.0 and victim.mm.mmap_sem.writer is None and not victim.mm.mmap_sem.readers:
                victim.writer_hold_s = hold_ms / 1e3
                victim.mm.mmap_sem.writer = victim.threads[0]
        self.mark_oom_victim(victim, th)
        victim.kill_event.succeed()
        for t in victim.threads:
            if t in self.touching:
                self.machine.cancel_run(t)             # the fault returns; the signal is delivered
        self.detector.progress()

    def set_skip(self, victim: Process, by: str) -> None:
        """set_bit(MMF_OOM_SKIP): at most once per mm."""
        mm = victim.mm
        if mm.has(MMF.MMF_OOM_SKIP):
            return
        mm.flags |= MMF.MMF_OOM_SKIP
        if not victim.oom_victim:
            return
        self.skip_log.append((victim.pid, by, self.env.now))
        if self.stats.first_skip_by is None and victim is self.victims[0]:
            self.stats.first_skip_by = by
            self.stats.first_skip_s = self.env.now
        self.detector.progress()
        if not self.policy.victim_list_backoff:
            self.release_victim(victim, by)
        elif self.domain is not None:
            self.domain.notify()

    def release_victim(self, victim: Process, by: str) -> None:
        """The OOM killer may now look past this victim."""
        victim.in_victim_list = False
        if victim.released_by is None:
            victim.released_by = by
            victim.released_time = self.env.now
            if victim is self.victims[0]:
                self.stats.first_released_by = by
        self.detector.progress()
        if self.domain is not None:
            self.domain.notify()

    def note_handover(self, victim: Process) -> None:
        victim.handed_over = True
        self.stats.handovers += 1

    def note_mmput(self, proc: Process) -> None:
        """__mmput() returned: the process's memory is freed, its exit still to finish."""
        proc.mmput_time = self.env.now
        if proc.killed:
            self._note_exits_pending(+1)

    def note_thread_exit(self, proc: Process) -> None:
        """A thread reached do_task_dead(); the process has exited with its last thread."""
        if proc.exit_time is not None or not all(t.exited for t in proc.threads):
            return
        proc.exit_time = self.env.now
        if proc.killed and proc.mmput_time is not None:
            self._note_exits_pending(-1)
            st = self.stats
            st.exit_delay_max_s = max(st.exit_delay_max_s, proc.exit_time - proc.mmput_time)

    def _note_exits_pending(self, delta: int) -> None:
        """Change the count of freed-but-not-exited victims; a count held for no time is not a wait.

        A victim whose exit follows its `__mmput()` in the same instant never waited, whatever
        order the two events had in that instant (the kernel log's reading: sweeps/kernel_log.py).
        """
        st = self.stats
        now = self.env.now
        if now > st.exits_pending_since:
            st.exits_pending_max = max(st.exits_pending_max, st.exits_pending)
            st.exits_pending_since = now
        st.exits_pending += delta

    def note_alloc_after_wait(self) -> None:
        if self.stats.first_progress_s is None and self.stats.first_kill_s is not None:
            self.stats.first_progress_s = self.env.now

    def free_memory(self, proc: Process, mb: float) -> None:
        if mb <= 0.0:
            return
        if proc.oom_victim:
            self.stats.memory_freed_mb += mb
        self.recycled_mb += mb
        if self.domain is not None:
            self.domain.uncharge(mb)

    def free_pgtables(self, proc: Process, mb: float) -> None:
        if proc.oom_victim:
            self.stats.memory_freed_mb += mb

    def panic(self, th) -> None:
        """Global OOM with nothing to kill: "Out of memory and no killable processes"."""
        self.stats.panic = True
        if not self.stop.triggered:
            self.stop.succeed()

    # -- the run ------------------------------------------------------------------------

    def describe_stall(self) -> str:
        """One line on why nothing progresses, at the moment the detector fires."""
        pending = [v for v in self.victims if v.released_by is None]
        stuck = self.softirq.stuck_cpus()
        if pending:
            v = pending[0]
            alive = [t for t in v.threads if not t.exited]
            where = ""
            if alive:
                t = alive[0]
                state = "running" if t.rate > 0.0 else ("runnable, starved" if t.runnable else "blocked")
                where = f" on CPU {t.cpu} as {t.attr}, {state}"
            if self.reaper is not None and self.reaper.timer_pending and stuck:
                return (f"reaper_timer_stuck: OOM_REAPER_DELAY/HZ/10 timer waits for starved ksoftirqd on CPU "
                        f"{','.join(map(str, stuck))}; victim {v.name} in {v.exit_phase}{where}")
            if v.handed_over:
                return f"victim_starved_after_handover: {v.name} in {v.exit_phase}{where}"
            if alive and alive[0].runnable and alive[0].rate == 0.0:
                return f"victim_starved: {v.name} in {v.exit_phase}{where}"
            if "waits for memory" in v.exit_phase:
                return f"close_waits_for_memory: {v.name} in {v.exit_phase}"
            return f"victim_pending: {v.name} in {v.exit_phase}{where}"
        owner = self.oom_lock.owner
        if owner is not None and owner.rate == 0.0:
            return f"oom_lock_holder_starved: {owner.name} as {owner.attr} on CPU {owner.cpu}"
        return "no_progress: allocators wait with no victim pending"

    def run(self) -> Outcome:
        env = self.env
        sc = self.sc
        env.timeout(sc.horizon_s).callbacks.append(lambda _e: None if self.stop.triggered else self.stop.succeed())
        env.run_until(self.stop)
        self.detector.finish()
        st = self.stats
        machine = self.machine
        cpu = {g.name: 0.0 for g in sc.groups}
        cpu.update({"oom_reaper": 0.0, "victim": 0.0, "ksoftirqd": 0.0})
        for group, seconds in machine.cpu_time_by_group().items():
            cpu[group] = cpu.get(group, 0.0) + seconds
        victim_cpu = 0.0
        for v in self.victims:
            for t in v.threads:
                victim_cpu += machine.cpu_time(t) - v.cpu_at_kill.get(t.tid, 0.0)
        cpu["victim"] = victim_cpu
        self._note_exits_pending(0)  # victims still waiting at the end count up to now
        exit_delay_max_s = st.exit_delay_max_s
        for v in self.victims:                         # still waiting at the end of the run
            if v.mmput_time is not None and v.exit_time is None:
                exit_delay_max_s = max(exit_delay_max_s, env.now - v.mmput_time)
        det = self.detector
        return Outcome(
            lockup=det.lockup,
            lockup_reason=det.reason if det.lockup else "",
            max_stall_s=det.max_stall_s,
            first_progress_s=st.first_progress_s,
            first_kill_s=st.first_kill_s,
            first_skip_s=st.first_skip_s,
            kills=st.kills,
            extra_kills=st.extra_kills,
            handed_over=st.handovers > 0,
            handovers=st.handovers,
            oom_skip_by=st.first_skip_by or "none",
            released_by=st.first_released_by or "none",
            reaper_attempts=st.reaper_attempts,
            memory_freed_mb=st.memory_freed_mb,
            panic=st.panic,
            victims_pending_at_end=sum(1 for v in self.victims if v.released_by is None),
            oom_calls=st.oom_calls,
            sim_time_s=env.now,
            sim_events=env.processed,
            exits_pending_max=st.exits_pending_max,
            exit_delay_max_s=exit_delay_max_s,
            cpu_s=cpu,
        )

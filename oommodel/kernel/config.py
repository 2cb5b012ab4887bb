"""The run configuration: every scenario and policy value the kernel code reads, drawn up once.

`RunConfig.build()` runs once per `simulate()` call, before anything is simulated, and turns the
validated scenario and policy options into frozen values: scheduling attributes as `SchedAttr`
(no text round trip), CPU lists as tuples, the policy's exit steps for its options. Kernel code
reads `state.cfg`, never the scenario, so what a run depends on is listed here in one place.
Numbers that are drawn per process or per event (say `close_ms`) stay `float | Dist` and are
drawn from the run's named streams where they are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oommodel.distributions import Choice, Dist
from oommodel.policies.base import ExitStep, OomPolicy
from oommodel.sched import MachineSpec, SchedAttr
from oommodel.sched.topology import Topology

Num = float | Dist


def machine_topology(m: Any) -> Topology:
    """The scenario's `machine.topology` (a preset name or sockets/cores_per_socket/llc) as a value."""
    t = m.topology
    if isinstance(t, str):
        return Topology.preset(t, m.cpus)
    return Topology(t.sockets, t.cores_per_socket, t.llc)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What the kernel code of one run reads (frozen; built once from scenario + policy options)."""

    hz: int
    horizon_s: float
    lockup_after_s: float
    machine: MachineSpec
    softirq_defer: bool                 # machine.softirq == "ksoftirqd_defer"
    ksoftirqd_awake_p: float | None     # a fixed probability replacing ksoftirqd_wake_hz
    ksoftirqd_wake_hz: float            # wakeup_softirqd() rate per CPU (softirq.py)
    idle_exit_us: Num                   # machine.idle_exit_us: wake-up onto an idle CPU (oom_reaper.py)
    writer_at_kill_p: float             # mmap_sem.writer_at_kill_p
    writer_hold_ms: Num
    close_ms: Num
    close_blocks_on_memory_p: float
    reaper_attr: SchedAttr
    reaper_cpus: tuple[int, ...] | None  # None: all CPUs
    reaper_last_cpu: int | None          # prev_cpu of the first wake-up; None: drawn from reaper_cpus
    reaper_busy_elsewhere_p: float
    reaper_busy_elsewhere_s: Num
    reaper_shared_zap: bool              # reaper.shared_zap: a reap that meets unmap_vmas() shares what is left
    sched_at_handover: str | Choice      # "unchanged", a sched text, or a choice of them
    handover_attrs: Mapping[str, SchedAttr]  # every sched text sched_at_handover can draw
    exit_steps: tuple[ExitStep, ...]
    exit_requeue: bool                   # do_exit() -> sched_move_task() requeues and preempts
    stall_s: float | None                # Handa's victim-list back-off (policy option)
    timeout_s: float | None              # Rientjes's deadline (policy option)

    @classmethod
    def build(cls, sc: Any, policy: OomPolicy, opts: Mapping[str, Any]) -> RunConfig:
        m = sc.machine
        handover = sc.victim.sched_at_handover
        texts = handover.values if isinstance(handover, Choice) else (handover,)
        r = sc.reaper
        return cls(
            hz=m.hz,
            horizon_s=sc.horizon_s,
            lockup_after_s=sc.lockup_after_s,
            machine=MachineSpec(
                cpus=m.cpus, hz=m.hz, preempt=m.preempt, rt_runtime_us=m.rt_runtime_us,
                rt_period_us=m.rt_period_us, rt_runtime_share=m.rt_runtime_share,
                balance_interval_s=m.balance_interval_ms / 1e3,
                topology=machine_topology(m),
            ),
            softirq_defer=m.softirq == "ksoftirqd_defer",
            ksoftirqd_awake_p=None if m.ksoftirqd_awake_p is None else float(m.ksoftirqd_awake_p),
            ksoftirqd_wake_hz=float(m.ksoftirqd_wake_hz),
            idle_exit_us=m.idle_exit_us,
            writer_at_kill_p=sc.mmap_sem.writer_at_kill_p,
            writer_hold_ms=sc.mmap_sem.writer_hold_ms,
            close_ms=sc.costs.close_ms,
            close_blocks_on_memory_p=sc.costs.close_blocks_on_memory_p,
            reaper_attr=r.sched.attr,
            reaper_cpus=None if r.cpus == "all" else tuple(r.cpus),
            reaper_last_cpu=None if r.last_cpu == "any" else int(r.last_cpu),
            reaper_busy_elsewhere_p=r.busy_elsewhere_p,
            reaper_busy_elsewhere_s=r.busy_elsewhere_s,
            reaper_shared_zap=r.shared_zap,
            sched_at_handover=handover,
            handover_attrs={str(t): SchedAttr.parse(str(t)) for t in texts if t != "unchanged"},
            exit_steps=policy.steps_for(opts),
            # do_exit() -> sched_move_task(): requeued at the tail and preempted at once (see do_exit_tail)
            exit_requeue=policy.exit_sched_move_resched and m.preempt == "full",
            stall_s=opts.get("stall_s"),
            timeout_s=opts.get("timeout_s"),
        )

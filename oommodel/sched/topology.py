"""CPU topology (sockets, cores, which CPUs share a last-level cache) and the CFS wake-up
placement that reads it.

Models the parts of kernel/sched/topology.c (`sd_llc`, `cpus_share_cache()`) and of
kernel/sched/fair.c:select_task_rq_fair() that decide where a woken SCHED_NORMAL thread such as
the `oom_reaper` kthread runs first, as of v4.19 and v6.1 (the two agree on what matters here):

    try_to_wake_up(p)                              [waker runs on this_cpu]
      select_task_rq_fair(p, prev_cpu, SD_BALANCE_WAKE)
        want_affine = this_cpu in p->cpus_allowed  (wake_wide() is false for a kthread that
                                                    wakes nobody)
        new_cpu = want_affine && this_cpu != prev_cpu ? wake_affine(this_cpu, prev_cpu) : prev_cpu
        select_idle_sibling(p, prev_cpu, new_cpu)  searches only sd_llc of new_cpu

`wake_affine()` is `wake_affine_idle()` then `wake_affine_weight()`: an idle waker CPU that shares
a cache with prev_cpu wins unless prev_cpu is idle; an idle prev_cpu wins (v6.1 says so outright;
in v4.19 `wake_affine_weight()` gets there because `capacity_of()` of an RT-busy waker CPU falls to
about 1 through `scale_rt_capacity()`); otherwise the CPU with the lower CFS load per capacity.
`select_idle_sibling()` returns the target if it is idle, prev_cpu if it shares the cache and is
idle, else the first idle CPU of the target's LLC domain scanned from target + 1 (`select_idle_cpu()`),
else the target itself, busy or not: the woken thread then waits on that run queue until load
balancing pulls it (sched/balance.py). So with one LLC for all CPUs (QEMU's plain `-smp 8`: one
socket of 8 cores sharing the L3) a woken kthread whose prev_cpu is hogged still finds an idle
CPU at once, while with one core per socket (each CPU its own LLC, as many hypervisors present
vCPUs) it stays on the hogged CPU.

Simplifications: no SMT siblings (`select_idle_core()`/`select_idle_smt()`), no `recent_used_cpu`,
no `wake_wide()` flip counting, no asymmetric capacities, no NUMA; per-CPU kthread stacking
(v5.x `is_per_cpu_kthread(current)`) is not applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LLC_SCOPES", "TOPOLOGY_PRESETS", "Topology", "select_idle_sibling", "select_task_rq_fair",
           "wake_affine"]

LLC_SCOPES = ("socket", "core")

# name -> description; every preset is sized by machine.cpus
TOPOLOGY_PRESETS = {
    "shared_llc": "1 socket x cpus cores, one L3 shared by all CPUs (QEMU 7.2 plain -smp N; most bare metal)",
    "core_per_socket": "cpus sockets x 1 core, every CPU its own LLC (QEMU -smp N,sockets=N,cores=1; "
                       "the default of many hypervisors)",
}


@dataclass(frozen=True, slots=True)
class Topology:
    """CPUs numbered socket by socket; `llc` says whether a socket's cores share one LLC."""

    sockets: int
    cores_per_socket: int
    llc: str = "socket"

    def __post_init__(self) -> None:
        if self.sockets < 1 or self.cores_per_socket < 1:
            raise ValueError(f"sockets and cores_per_socket must be >= 1, got {self.sockets}, {self.cores_per_socket}")
        if self.llc not in LLC_SCOPES:
            raise ValueError(f"llc must be one of {LLC_SCOPES}, got {self.llc!r}")

    @classmethod
    def preset(cls, name: str, cpus: int) -> Topology:
        if name == "shared_llc":
            return cls(1, cpus)
        if name == "core_per_socket":
            return cls(cpus, 1)
        raise ValueError(f"unknown topology preset {name!r} (known: {', '.join(TOPOLOGY_PRESETS)})")

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores_per_socket

    def llc_id(self, cpu: int) -> int:
        """Index of `cpu`'s LLC domain (per_cpu(sd_llc_id, cpu))."""
        return cpu // self.cores_per_socket if self.llc == "socket" else cpu

    def cpus_share_cache(self, a: int, b: int) -> bool:
        """kernel/sched/core.c:cpus_share_cache()."""
        return self.llc_id(a) == self.llc_id(b)

    def llc_span(self, cpu: int) -> range:
        """The CPUs of `cpu`'s LLC domain (sched_domain_span(sd_llc))."""
        if self.llc == "core":
            return range(cpu, cpu + 1)
        first = (cpu // self.cores_per_socket) * self.cores_per_socket
        return range(first, first + self.cores_per_socket)


def wake_affine(this_cpu: int, prev_cpu: int, idle: Sequence[bool], load: Sequence[float],
                task_weight: float, topo: Topology) -> int:
    """kernel/sched/fair.c:wake_affine() -> wake_affine_idle() / wake_affine_weight(), v4.19/v6.1.

    `load[c]` is CFS load per unit of CFS capacity (`math.inf` when RT leaves CFS nothing).
    """
    if idle[this_cpu] and topo.cpus_share_cache(this_cpu, prev_cpu):
        return prev_cpu if idle[prev_cpu] else this_cpu
    if idle[prev_cpu]:
        return prev_cpu
    this_eff = load[this_cpu] + task_weight
    return this_cpu if this_eff < load[prev_cpu] else prev_cpu


def select_idle_sibling(prev_cpu: int, target: int, allowed: Sequence[int], idle: Sequence[bool],
                        topo: Topology) -> int:
    """kernel/sched/fair.c:select_idle_sibling() -> select_idle_cpu() within sd_llc(target), v4.19/v6.1."""
    if idle[target]:
        return target
    if prev_cpu != target and topo.cpus_share_cache(prev_cpu, target) and idle[prev_cpu]:
        return prev_cpu
    span = topo.llc_span(target)
    n = len(span)
    first = span.start
    for k in range(1, n):
        c = first + (target - first + k) % n
        if idle[c] and c in allowed:
            return c
    return target


def select_task_rq_fair(waker_cpu: int, prev_cpu: int, allowed: Sequence[int], idle: Sequence[bool],
                        load: Sequence[float], task_weight: float, topo: Topology) -> int:
    """kernel/sched/fair.c:select_task_rq_fair(p, prev_cpu, SD_BALANCE_WAKE), v4.19/v6.1 (module doc)."""
    if prev_cpu not in allowed:
        prev_cpu = allowed[0]
    new_cpu = prev_cpu
    if waker_cpu in allowed and waker_cpu != prev_cpu:
        new_cpu = wake_affine(waker_cpu, prev_cpu, idle, load, task_weight, topo)
    return select_idle_sibling(prev_cpu, new_cpu, allowed, idle, topo)


def cfs_load(cfs_weight: float, cfs_cap: float) -> float:
    """CFS load per capacity of one CPU: `cpu_load() / capacity_of()` in the fluid model."""
    return math.inf if cfs_cap <= 0.0 else cfs_weight / cfs_cap

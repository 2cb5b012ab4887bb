"""Scenario -> reproducer: what a stock kernel under QEMU can run of a scenario file, and the kernel's facts.

`translate()` turns the canonical scenario into the parameters of infra/qemu/src/oomrepro.c and
refuses (`CalibrationRefused`, naming the key path) every feature a stock kernel cannot run.  Keys
that are the model's own parameters (`MODEL_ONLY_KEYS`) are not translated: on the kernel they are
whatever the kernel does, which is what is measured.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.errors import CalibrationRefused

GUEST_MEMORY_MB = 2048
MAX_LIMIT_MB = 1536  # memory.max must leave the guest room for its own kernel and the watchdog
MAX_CPUS = 64  # the reproducer's CPU masks are 64 bits

# Keys that are the model's own parameters: the kernel has its real values, so they are not translated.
MODEL_ONLY_KEYS = (
    "machine.balance_interval_ms",
    "machine.ksoftirqd_awake_p",
    "victim.pgtable_mb_per_gb",
    "costs.touch_ms_per_mb",
    "costs.unmap_ms_per_gb",
    "costs.free_pgtables_ms_per_gb",
    "costs.close_ms",
    "costs.alloc_loop_us",
    "costs.exit_ms",
    "costs.oom_kill_us",
    "reaper.busy_elsewhere_s",
    "reaper.shared_zap",
    "mmap_sem.writer_hold_ms",
)


# --------------------------------------------------------------------------------------------------
# The kernel's fixed facts


@dataclass(frozen=True)
class KernelFacts:
    """What the booted kernel fixes at build time (and the scenario must agree with)."""

    release: str
    hz: int
    softirq: str = "ksoftirqd_defer"  # 4.9..6.4: "softirq: Let ksoftirqd do its job" (reverted in 6.5)


DEBIAN_6_1 = KernelFacts("6.1.0-NN-amd64", 250)  # Debian bookworm's build, when no kernel is cached


def kernel_facts(kernel: Path) -> KernelFacts:
    """CONFIG_HZ from the config-<release> shipped next to the image (Debian's 6.1: 250); softirq from the release."""
    from sweeps.calibrate.qemu import kernel_release
    from sweeps.calibrate.stock_kernels import softirq_of

    release = kernel_release(kernel)
    hz = 250
    config = kernel.parent / f"config-{release}"
    if config.is_file():
        m = re.search(r"^CONFIG_HZ=(\d+)$", config.read_text(errors="replace"), re.M)
        if m:
            hz = int(m.group(1))
    return KernelFacts(release, hz, softirq_of(release))


def match_kernel(scenario: Mapping[str, Any], facts: KernelFacts) -> tuple[dict[str, Any], list[str]]:
    """The scenario with machine.hz and machine.softirq set to the kernel's, and what changed.

    Used by --match-kernel: model and kernel then run the same (changed) scenario.
    """
    sc = json.loads(json.dumps(scenario))
    changes = []
    for key, value in (("hz", facts.hz), ("softirq", facts.softirq)):
        if sc["machine"].get(key) != value:
            changes.append(f"machine.{key}: {sc['machine'].get(key)!r} -> {value!r}")
            sc["machine"][key] = value
    return sc, changes


# --------------------------------------------------------------------------------------------------
# machine.topology -> QEMU's -smp


@dataclass(frozen=True)
class GuestTopology:
    """The CPU topology a boot presents to the guest: QEMU `-smp N,sockets=S,cores=C,threads=1`.

    QEMU (7.2, x86) describes an L3 cache per socket shared by that socket's cores (CPUID leaf 4),
    so the guest's `sd_llc` domains (kernel/sched/topology.c, `cpu_coregroup_mask()`) are the
    sockets: `llc_groups` == `sockets`. That is the shape of every topology oommodel accepts except
    a socket of several cores that each have their own LLC, which -smp cannot express.
    """

    cpus: int
    sockets: int
    cores_per_socket: int

    @classmethod
    def from_smp(cls, smp: str) -> GuestTopology:
        """Parse a -smp value this module wrote ("8,sockets=8,cores=1,threads=1"; plain "8": one socket)."""
        n, *rest = smp.split(",")
        fields = dict(f.split("=", 1) for f in rest if "=" in f)
        sockets = int(fields.get("sockets", 1))
        return cls(int(n), sockets, int(fields.get("cores", int(n) // sockets)))

    @property
    def name(self) -> str:
        """The machine.topology word for it: shared_llc, core_per_socket, or SOCKETSxCORES."""
        if self.sockets == 1:
            return "shared_llc"
        if self.cores_per_socket == 1:
            return "core_per_socket"
        return f"{self.sockets}x{self.cores_per_socket}"

    @property
    def smp(self) -> str:
        return f"{self.cpus},sockets={self.sockets},cores={self.cores_per_socket},threads=1"

    @property
    def llc_groups(self) -> int:
        """How many last-level-cache domains the guest should report (one per socket)."""
        return self.sockets


def guest_topology(machine: Mapping[str, Any]) -> GuestTopology:
    """The QEMU topology for a canonical scenario's `machine` (oommodel/sched/topology.py's values);
    refuses, naming `machine.topology`, what QEMU's -smp cannot present."""
    n = int(machine["cpus"])
    topo = machine.get("topology", "shared_llc")
    if topo == "shared_llc":
        return GuestTopology(n, 1, n)
    if topo == "core_per_socket":
        return GuestTopology(n, n, 1)
    if isinstance(topo, Mapping):
        sockets, cores, llc = int(topo["sockets"]), int(topo["cores_per_socket"]), topo.get("llc", "socket")
        _refuse_if(sockets * cores != n, "machine.topology",
                   f"sockets x cores_per_socket = {sockets * cores}, must equal machine.cpus ({n})")
        _refuse_if(llc == "core" and cores > 1, "machine.topology.llc",
                   f"'core' with {cores} cores per socket: QEMU -smp gives each socket one L3 shared by its "
                   f"cores; a per-core LLC exists only as one core per socket (core_per_socket)")
        return GuestTopology(n, sockets, cores)  # llc "core" with one core per socket is core_per_socket
    raise CalibrationRefused("machine.topology", f"{topo!r}: not a topology QEMU can present "
                                                 "(shared_llc, core_per_socket or {sockets, cores_per_socket, llc})")


# --------------------------------------------------------------------------------------------------
# Scenario -> reproducer parameters


@dataclass(frozen=True)
class ChildSpec:
    """One reproducer child: a process of a scenario group."""

    group: str
    index: int
    role: str
    policy: str
    rt_priority: int
    nice: int
    cpus: tuple[int, ...] | None  # None: all CPUs
    bytes: int
    oom_score_adj: int
    start_us: int

    def conf_line(self) -> str:
        mask = "all" if self.cpus is None else format(sum(1 << c for c in self.cpus), "x")
        return (f"child {self.group} {self.index} {self.role} {self.policy} {self.rt_priority} {self.nice} "
                f"{mask} {self.bytes} {self.oom_score_adj} {self.start_us}")


@dataclass(frozen=True)
class ReproPlan:
    """Everything one boot needs: QEMU size, boot parameters, /oomrepro.conf settings and children."""

    cpus: int
    preempt: str
    watchdog_cpu: int
    memory_max_bytes: int
    horizon_s: float
    lockup_after_s: float
    sysctls: tuple[tuple[str, str], ...]
    reaper: str  # "" (kernel default) or the reproducer's "reaper ..." line
    children: tuple[ChildSpec, ...]
    groups: tuple[str, ...]
    topology: GuestTopology | None = None  # what QEMU presents (machine.topology); None: plain -smp cpus

    @property
    def smp(self) -> str:
        """QEMU's -smp value: the CPU count, with the sockets/cores that present machine.topology."""
        return self.topology.smp if self.topology is not None else str(self.cpus)

    def conf_text(self, run_index: int) -> str:
        lines = [
            "# written by sweeps/calibrate.py",
            f"run {run_index}",
            f"horizon_s {self.horizon_s:.6f}",
            f"lockup_after_s {self.lockup_after_s:.6f}",
            f"memory_max {self.memory_max_bytes}",
            f"watchdog_cpu {self.watchdog_cpu}",
        ]
        lines += [f"sysctl {path} {value}" for path, value in self.sysctls]
        if self.reaper:
            lines.append(self.reaper)
        lines += [c.conf_line() for c in self.children]
        return "\n".join(lines) + "\n"

    def cmdline(self) -> str:
        # RCU's stall report comes before the watchdog gives up (Debian's default is 21 s).
        rcu = max(3, int(self.lockup_after_s * 0.75))
        return (f"console=ttyS0 loglevel=3 printk.devkmsg=on log_buf_len=16M preempt={self.preempt} "
                f"rcupdate.rcu_cpu_stall_timeout={rcu} panic=-1 rdinit=/init")


def _refuse_if(cond: bool, path: str, reason: str) -> None:
    if cond:
        raise CalibrationRefused(path, reason)


def _is_dist(value: Any) -> bool:
    return isinstance(value, Mapping)


def translate(scenario: Mapping[str, Any], facts: KernelFacts, seed: int = 0) -> ReproPlan:
    """Reproducer parameters for a canonical scenario dict (Scenario.to_dict()); refuses what a stock kernel cannot run.

    Distributions in rss_mb / start_s are drawn per child from `seed` (oommodel.streams, stream
    names "calibrate", group, index), so run r of a calibration uses seed + r.
    """
    from oommodel.streams import Streams

    v = scenario["victim"]
    sched_at = v["sched_at_handover"]
    _refuse_if(sched_at != "unchanged", "victim.sched_at_handover",
               "Handa's priority change of the victim at the handover point is an in-kernel test hack "
               "(inside exit_mmap); a stock kernel cannot run it: use 'unchanged'")
    _refuse_if(v["memory"]["mlocked"] > 0, "victim.memory.mlocked", "only anonymous memory is reproduced")
    _refuse_if(v["memory"]["shared_file"] > 0, "victim.memory.shared_file", "only anonymous memory is reproduced")
    m = scenario["machine"]
    _refuse_if(m["cpus"] > MAX_CPUS, "machine.cpus", f"the reproducer handles at most {MAX_CPUS} CPUs")
    topology = guest_topology(m)
    _refuse_if(m["hz"] != facts.hz, "machine.hz",
               f"{m['hz']} cannot be set on a built kernel: {facts.release} has CONFIG_HZ={facts.hz}; "
               f"set machine.hz: {facts.hz} or pass --match-kernel")
    _refuse_if(m["softirq"] != facts.softirq, "machine.softirq",
               f"{m['softirq']!r} is not how {facts.release} handles softirqs ({facts.softirq!r}: from 4.9 to 6.4 "
               f"pending softirqs are left to ksoftirqd once it is awake, before and after that they run on irq "
               f"exit); set it or pass --match-kernel")
    oom = scenario.get("oom")
    _refuse_if(oom is None, "oom", "no memory pressure: nothing for the OOM killer to do on the kernel")
    _refuse_if(oom["domain"] != "memcg", "oom.domain",
               "only a memcg OOM is reproduced (a global OOM would take the guest's own memory as the limit)")
    _refuse_if(oom["limit_mb"] > MAX_LIMIT_MB, "oom.limit_mb",
               f"must be <= {MAX_LIMIT_MB} MB to fit the {GUEST_MEMORY_MB} MB guest")
    c = scenario["costs"]
    _refuse_if(_is_dist(c["close_blocks_on_memory_p"]) or c["close_blocks_on_memory_p"] > 0,
               "costs.close_blocks_on_memory_p", "a ->close() that waits for memory needs a driver; not reproduced")
    r = scenario["reaper"]
    _refuse_if(r["busy_elsewhere_p"] > 0, "reaper.busy_elsewhere_p",
               "a reaper busy with another domain's victim is not reproduced (one memcg per boot)")
    _refuse_if(scenario["mmap_sem"]["writer_at_kill_p"] > 0, "mmap_sem.writer_at_kill_p",
               "a victim killed inside an mmap_sem writer is not reproduced")

    ncpu = m["cpus"]
    groups = scenario["groups"]
    rt_cpus: set[int] = set()
    used: set[int] = set()
    for i, g in enumerate(groups):
        _refuse_if(g["threads_per_process"] != 1, f"groups[{i}].threads_per_process",
                   "the reproducer runs one thread per process")
        cpus = set(g["cpus"]) if g.get("cpus") is not None else set(range(ncpu))
        used |= cpus
        if g["sched"]["policy"] in ("fifo", "rr"):
            rt_cpus |= cpus
    free = sorted(set(range(ncpu)) - used)
    no_rt = sorted(set(range(ncpu)) - rt_cpus)
    if free:
        watchdog = free[-1]
    elif no_rt:
        watchdog = no_rt[-1]  # shared with non-RT children only: the FIFO-99 watchdog still preempts them
    else:
        i = next(i for i, g in enumerate(groups) if g["sched"]["policy"] in ("fifo", "rr"))
        raise CalibrationRefused(f"groups[{i}].cpus",
                                 "the watchdog needs a CPU that no SCHED_FIFO/RR group uses; leave one out")

    streams = Streams(seed)
    children = []
    for i, g in enumerate(groups):
        pol = g["sched"]["policy"]
        for k in range(g["count"]):
            rss = float(streams.draw(_value(g["rss_mb"]), "calibrate", g["name"], k, "rss_mb"))
            start = float(streams.draw(_value(g["start_s"]), "calibrate", g["name"], k, "start_s"))
            children.append(ChildSpec(
                group=g["name"], index=k, role=g["role"], policy=pol,
                rt_priority=int(g["sched"].get("rt_priority") or 0) if pol in ("fifo", "rr") else 0,
                nice=int(g["sched"].get("nice") or 0) if pol in ("normal", "batch") else 0,
                cpus=None if g.get("cpus") is None else tuple(g["cpus"]),
                bytes=int(round(rss * 1024 * 1024)), oom_score_adj=int(g["oom_score_adj"]),
                start_us=int(round(start * 1e6)),
            ))

    runtime, period = int(m["rt_runtime_us"]), int(m["rt_period_us"])
    sysctls = [("/proc/sys/kernel/sched_rt_runtime_us", "-1"), ("/proc/sys/kernel/sched_rt_period_us", str(period))]
    if runtime != -1:
        sysctls.append(("/proc/sys/kernel/sched_rt_runtime_us", str(runtime)))
    sysctls += [
        ("/sys/kernel/debug/sched/features", "RT_RUNTIME_SHARE" if m["rt_runtime_share"] else "NO_RT_RUNTIME_SHARE"),
        ("/proc/sys/kernel/hung_task_timeout_secs", str(max(1, math.ceil(scenario["lockup_after_s"])))),
        ("/proc/sys/vm/oom_dump_tasks", "0"),  # 64 task lines per kill would swamp the log
    ]
    reaper = ""
    rs = r["sched"]
    if r["cpus"] != "all" or rs["policy"] != "normal" or int(rs.get("nice") or 0) != 0:
        mask = "all" if r["cpus"] == "all" else format(sum(1 << c for c in r["cpus"]), "x")
        reaper = (f"reaper {rs['policy']} {int(rs.get('rt_priority') or 0)} {int(rs.get('nice') or 0)} {mask}")
    return ReproPlan(
        cpus=ncpu, preempt=m["preempt"], watchdog_cpu=watchdog,
        memory_max_bytes=int(round(oom["limit_mb"] * 1024 * 1024)),
        horizon_s=float(scenario["horizon_s"]), lockup_after_s=float(scenario["lockup_after_s"]),
        sysctls=tuple(sysctls), reaper=reaper, children=tuple(children),
        groups=tuple(g["name"] for g in groups), topology=topology,
    )


def _value(raw: Any) -> Any:
    """A Num field of a canonical dict as oommodel.streams.draw takes it (a Dist for mappings)."""
    if isinstance(raw, Mapping):
        from oommodel.distributions import dist_from_dict

        return dist_from_dict(dict(raw))
    return raw

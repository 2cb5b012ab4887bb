"""Parse one calibration boot's console into the outcome fields the model reports.

The reproducer (infra/qemu/src/oomrepro.c) writes its own events into the kernel log through
/dev/kmsg ("oomsweep: start|child|exit|stall|end ..."), so kills, reaps and exits share one clock:
the printk timestamp.  Times below are seconds since the reproducer's "start" line.

Mapping to `oommodel.outcome.Outcome` (what the kernel cannot show is approximated, as stated):
- kills: "Memory cgroup out of memory: Killed process N" of a reproducer child.
- extra_kills: 0. On 6.1 select_bad_process() aborts while any victim of the domain lacks
  MMF_OOM_SKIP, and exit_mmap() sets it right after unmap_vmas(), so a kill implies the earlier
  victims' memory was unmapped.  What the log does show, kills made before an earlier victim had
  exited (under preempt=full killed FIFO children wait runnable after mmput, real-kernel-6.1.md
  section 4), is `KernelRun.kills_before_exit`.
- progress: a kill (victim selected), "oom_reaper: reaped process N" (MMF_OOM_SKIP by the reaper),
  a child's exit, or the watchdog's "progress" line (memory.current dropped by at least 256 KiB
  while charges were failing: memory freed; exits lag behind the freeing under preempt=full).  A stall
  interval starts at the first failing charge after a progress event ("invoked oom-killer", or the
  watchdog's "oom" mark: memory.events "oom" rose, polled every 5 ms) and ends at the next progress
  event; `max_stall_s` is the longest one.  Polling makes it exact to ~5 ms (more under TCG).
- lockup: the watchdog declared a stall (`lockup_after_s` of failing charges without progress while
  an allocator lived).
- oom_skip_by: "reaper" if the first victim was reaped ("oom_reaper: reaped process" is printed only
  when the reaper found MMF_OOM_SKIP unset), else "exit"; first_skip_s: the reap, else the earliest
  of its exit, the next kill (select_bad_process() aborts while an earlier victim lacks
  MMF_OOM_SKIP) and memory coming back after the kill.
- oom_calls: `oom` of memory.events (every memcg OOM invocation, including those that kill nothing).
- exits_pending_max, exit_delay_max_s: the model counts a victim from its own __mmput() to its exit.
  The kernel logs neither mmput() nor MMF_OOM_SKIP, so a victim's memory counts as freed at the
  earliest of: the next kill of a reproducer child (on 6.1 select_bad_process() aborts while an
  earlier victim lacks MMF_OOM_SKIP, which exit_mmap() sets right after unmap_vmas(); the last
  batch of pages and the page tables are freed a little later), the watchdog's first "progress"
  line after the kill (memory.current dropped: on 6.1 at most the newest victim can still be
  unfreed), its reap ("oom_reaper: reaped process N": freed by the reaper, not by its own mmput(),
  where the model would count nothing), and its exit (the "oomsweep: exit" line, seen by wait4()
  every 5 ms). These bound the freeing from above, except that MMF_OOM_SKIP (which the next
  kill reveals) is set shortly before __mmput() returns, so the derived waits are approximate,
  and mostly short of the truth: a victim waits from
  that time to its exit, or to the end of the run (the stall declaration, else the "end" line) if
  it had not exited; exits_pending_max is the most waiting at one time, exit_delay_max_s the
  longest wait. A victim whose memory never shows as freed before the end does not count.
  `KernelRun.exit_gap_max_s` is the longest time without a victim's exit from the first kill to the
  last exit (to the end of the run while a victim had not exited).
- cpu_s: per group from wait4() rusage; oom_reaper and ksoftirqd (all CPUs) over the run; victim nan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from sweeps.errors import KernelLogError

DMESG_BEGIN = "@@oomsweep-dmesg-begin"
DMESG_END = "@@oomsweep-dmesg-end"

_LINE = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
_KV = re.compile(r"(\w+)=(\S+)")
_KILLED = re.compile(
    r"Killed process (\d+) \(([^)]*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB"
    r"(?:.*?pgtables:(\d+)kB)?"
)
_REAPED = re.compile(r"oom_reaper: reaped process (\d+)")
_UNABLE = re.compile(r"oom_reaper: unable to reap pid:(\d+)")
_HUNG = re.compile(r"blocked for more than (\d+) seconds")
_PREEMPT = re.compile(r"@@oomsweep-preempt [^\n]*?\((\w+)\)")  # /sys/kernel/debug/sched/preempt
_TOPOLOGY = re.compile(r"@@oomsweep-topology cpu=(\d+) package=(\S+) llc=(\S+) sched_domains=(\S*)")


@dataclass(frozen=True)
class ObservedTopology:
    """The CPU topology the guest reported (infra/qemu/init's `@@oomsweep-topology` lines, one per CPU).

    `llc_groups`: distinct `cache/index3/shared_cpu_list` values, i.e. the guest's last-level-cache
    domains (`sd_llc`, what select_idle_sibling() searches); 0 when the guest showed no L3.
    `sched_domains`: cpu0's scheduler domain names, innermost first ("MC" = the LLC level).
    """

    cpus: int
    sockets: int
    llc_groups: int
    sched_domains: str

    def text(self) -> str:
        return (f"{self.cpus} CPUs, {self.sockets} socket(s), {self.llc_groups} LLC group(s)"
                + (f", cpu0 domains {self.sched_domains}" if self.sched_domains else ""))


def guest_topology(console: str) -> ObservedTopology | None:
    """What the guest's /sys said about its CPUs; None for a boot whose /init did not print it
    (every boot before the line existed: those ran QEMU's plain -smp N, i.e. shared_llc)."""
    cpus = {}
    for m in _TOPOLOGY.finditer(console.replace("\r", "")):
        cpus[int(m.group(1))] = (m.group(2), m.group(3), m.group(4))
    if not cpus:
        return None
    llcs = {llc for _, llc, _ in cpus.values() if llc != "-"}
    return ObservedTopology(len(cpus), len({pkg for pkg, _, _ in cpus.values()}), len(llcs),
                            cpus.get(0, ("", "", ""))[2])


@dataclass(frozen=True)
class KernelRun:
    """One run of the reproducer as read from the kernel log."""

    outcome: dict[str, Any]            # Outcome field -> value (schema.outcome_columns accepts it)
    end_reason: str                    # "done" | "horizon" | "stall" | "" (no end line: boot cut short)
    kill_to_exit_s: tuple[float, ...]  # per victim that exited: exit time - kill time
    kill_to_reap_s: tuple[float, ...]  # per victim reaped before any watchdog action: reap time - kill time
    reaped_after_watchdog_s: tuple[float, ...]  # reaps after a stall: time since the watchdog freed the CPUs
    kills_before_exit: int  # kills made while an earlier victim had neither exited nor been reaped
    rcu_stalls: int
    hung_tasks: int
    rt_throttled: bool
    settings_failed: tuple[str, ...]
    errors: tuple[str, ...] = field(default=())
    exit_gap_max_s: float = 0.0  # longest time without a victim's exit, first kill -> last exit (or end)
    preempt: str = ""  # the preemption model /init found active ("full", "voluntary", "none"; "" if not printed)
    topology: ObservedTopology | None = None  # the guest's CPU topology (None: not printed by this /init)


def kernel_lines(console: str) -> list[tuple[float, str]]:
    """(timestamp, message) of the kernel log the guest printed (dmesg between markers if present)."""
    text = console.replace("\r", "")
    if DMESG_BEGIN in text:
        text = text.split(DMESG_BEGIN, 1)[1].split(DMESG_END, 1)[0]
    out = []
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out


@dataclass(frozen=True)
class KilledProcess:
    """One "Killed process N (comm) total-vm:... anon-rss:...kB" line (oom_kill.c:__oom_kill_process())."""

    t: float             # printk seconds
    pid: int
    comm: str
    anon_rss_kb: int
    file_rss_kb: int
    shmem_rss_kb: int


def killed_processes(lines: list[tuple[float, str]]) -> list[KilledProcess]:
    """Every OOM kill of `kernel_lines()`, in log order (the first line per pid)."""
    out: list[KilledProcess] = []
    seen: set[int] = set()
    for t, msg in lines:
        if (m := _KILLED.search(msg)) and int(m.group(1)) not in seen:
            seen.add(int(m.group(1)))
            out.append(KilledProcess(t, int(m.group(1)), m.group(2), int(m.group(4)), int(m.group(5)),
                                     int(m.group(6))))
    return out


def stall_declared_at(lines: list[tuple[float, str]]) -> float:
    """The printk time of the watchdog's first "oomsweep: stall" line (inf: no stall declared)."""
    return next((t for t, msg in lines if msg.startswith("oomsweep: stall t=")), math.inf)


def _kv(msg: str) -> dict[str, str]:
    return dict(_KV.findall(msg))


def stall_intervals_max(progress: list[float], marks: list[float], t_cut: float, trailing: bool) -> float:
    """Longest span from the first failing charge after a progress event to the next progress event.

    `trailing`: the run did not end with all allocators done, so the span open at `t_cut` counts.
    """
    longest = 0.0
    prev = -math.inf
    j = 0
    ends = [p for p in progress if p <= t_cut] + ([t_cut] if trailing else [])
    for end in ends:
        while j < len(marks) and marks[j] <= prev:
            j += 1
        if j < len(marks) and marks[j] < end:
            longest = max(longest, end - marks[j])
        prev = max(prev, end)
    return longest


def exit_waits(kills: list[tuple[float, int]], exits: dict[int, float], reaped: dict[int, float],
               charged: list[float], t_cut: float) -> tuple[int, float, dict[int, float]]:
    """(exits_pending_max, exit_delay_max_s, victim pid -> time its memory counts as freed).

    `kills`: (time, pid) of the reproducer's victims in order; `exits`/`reaped`: pid -> time;
    `charged`: times of the watchdog's "progress" lines. Only events up to `t_cut` count; a victim
    freed but not exited by then waits until `t_cut`. See the module docstring for the bounds.
    """
    kills = sorted((t, p) for t, p in kills if t <= t_cut)
    charged = sorted(t for t in charged if t <= t_cut)
    freed: dict[int, float] = {}
    for i, (tk, pid) in enumerate(kills):
        bounds = [exits.get(pid, math.inf), reaped.get(pid, math.inf)]
        bounds.append(next((t for t, _ in kills[i + 1:] if t > tk), math.inf))
        bounds.append(next((t for t in charged if t > tk), math.inf))
        tf = min(bounds)
        if tf <= t_cut:
            freed[pid] = tf
    events: list[tuple[float, int]] = []
    delay_max = 0.0
    for pid, tf in freed.items():
        te = exits.get(pid, math.inf)
        te = te if te <= t_cut else t_cut
        if te > tf:
            events += [(tf, 1), (te, -1)]
            delay_max = max(delay_max, te - tf)
    pending = pending_max = 0
    for _, step in sorted(events):  # at equal times the exit (-1) comes first
        pending += step
        pending_max = max(pending_max, pending)
    return pending_max, delay_max, freed


def exit_gap_max(first_kill: float | None, victim_exits: list[float], t_cut: float, open_end: bool) -> float:
    """Longest time without a victim's exit from the first kill to the last exit (to `t_cut` if `open_end`)."""
    if first_kill is None:
        return 0.0
    times = [first_kill] + sorted(t for t in victim_exits if first_kill <= t <= t_cut)
    if open_end:
        times.append(t_cut)
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def boot_failure(console: str, timed_out: bool) -> str | None:
    """Why a boot never ran the reproducer, naming the step, or None when it started ("oomsweep:
    start" seen). Such a boot is not a sample of the scenario, so it must not become a row."""
    lines = kernel_lines(console)
    if any(m.startswith("oomsweep: start ") for _, m in lines):
        return None
    said = next((m for _, m in lines if m.startswith("oomsweep: error")), None)
    if said:
        return f"step reproducer setup: {said}"
    panic = next((m for _, m in lines if "Kernel panic" in m), None)
    if panic:
        return f"step boot: {panic}"
    last = next((raw.strip() for raw in reversed(console.replace("\r", "").splitlines()) if raw.strip()), "")
    how = "the wall-clock limit passed" if timed_out else "the guest stopped"
    return f"step boot: {how} before the reproducer started (last console line: {last[:160] or 'none'})"


def parse_run(console: str, groups: tuple[str, ...] = ()) -> KernelRun:
    """Parse one boot's console; `groups` names the scenario's groups (for cpu_s keys)."""
    lines = kernel_lines(console)
    start = next(((t, m) for t, m in lines if m.startswith("oomsweep: start ")), None)
    if start is None:
        errs = [m for _, m in lines if m.startswith("oomsweep: error")]
        raise KernelLogError(errs[0] if errs else "no 'oomsweep: start' line: the reproducer never started")
    t0 = start[0]
    header = _kv(start[1])
    horizon = float(header.get("horizon_s", "nan"))
    pid_group: dict[int, str] = {}
    kills: list[tuple[float, int, float]] = []  # (t, pid, freed_mb)
    reaped: dict[int, float] = {}
    exits: dict[int, float] = {}
    cpu: dict[str, float] = {g: 0.0 for g in groups}
    end: dict[str, str] = {}
    stall_t: float | None = None
    marks: list[float] = []
    charged: list[float] = []
    rcu = hung = 0
    reap_times: list[float] = []
    throttled = panic = False
    errors: list[str] = []
    for t, msg in lines:
        rel = t - t0
        if msg.startswith("oomsweep: child "):
            kv = _kv(msg)
            pid_group[int(kv["pid"])] = kv["group"]
        elif msg.startswith("oomsweep: exit "):
            kv = _kv(msg)
            pid = int(kv["pid"])
            exits.setdefault(pid, rel)
            cpu[kv["group"]] = cpu.get(kv["group"], 0.0) + float(kv.get("cpu_s", "0"))
        elif msg.startswith("oomsweep: stall t="):
            stall_t = rel if stall_t is None else stall_t
            if "since" in (kv := _kv(msg)):
                marks.append(float(kv["since"]))  # the watchdog's own stall start (its clock ~ this one)
        elif msg.startswith("oomsweep: progress t="):
            charged.append(rel)  # memory.current dropped while charges were failing
        elif msg.startswith("oomsweep: oom t=") or " invoked oom-killer: " in msg:
            marks.append(rel)  # a failing charge: the watchdog saw memory.events "oom" rise, or out_of_memory() ran
        elif msg.startswith("oomsweep: end "):
            end = _kv(msg)
        elif msg.startswith("oomsweep: error"):
            errors.append(msg)
        elif (m := _KILLED.search(msg)) and rel >= 0:
            pid = int(m.group(1))
            if pid in pid_group:
                kb = sum(int(m.group(i)) for i in (4, 5, 6)) + int(m.group(7) or 0)
                kills.append((rel, pid, kb / 1024.0))
        elif m := _REAPED.search(msg):
            reaped.setdefault(int(m.group(1)), rel)
            reap_times.append(rel)
        elif _UNABLE.search(msg):
            reap_times.append(rel)
        elif "self-detected stall" in msg or "detected stalls on CPUs" in msg:
            rcu += 1
        elif _HUNG.search(msg):
            hung += 1
        elif "RT throttling activated" in msg:
            throttled = True
        elif "Kernel panic" in msg:
            panic = True
    settings_failed = tuple(
        ln.split(" ", 1)[1] for ln in console.replace("\r", "").splitlines() if ln.startswith("@@oomsweep-setting-failed")
    )

    reason = end.get("reason", "")
    # The run's end for stall accounting: the stall declaration, else the last allocator's exit / end line.
    t_end = float(end["t"]) if "t" in end else (lines[-1][0] - t0 if lines else 0.0)
    t_cut = stall_t if stall_t is not None else t_end
    after_watchdog = tuple(t - t_end for t in reaped.values() if stall_t is not None and t > t_cut)
    reaped = {p: t for p, t in reaped.items() if t <= t_cut}  # reaps once the watchdog freed the CPU do not count
    reap_tries = sum(1 for t in reap_times if t <= t_cut)
    progress = sorted([t for t, _, _ in kills] + list(reaped.values()) + [t for t in exits.values() if t <= t_cut]
                      + [t for t in charged if t <= t_cut])
    max_stall = stall_intervals_max(progress, sorted(marks), t_cut, trailing=reason != "done")
    lockup = stall_t is not None

    before_exit = 0
    pending: set[int] = set()
    for t, pid, _ in kills:
        pending = {p for p in pending if exits.get(p, math.inf) > t and reaped.get(p, math.inf) > t}
        if pending:
            before_exit += 1
        pending.add(pid)
    first_kill = kills[0][0] if kills else None
    first_skip = None
    skip_by = "none"
    if kills:
        v, tk = kills[0][1], kills[0][0]
        te, tr = exits.get(v, math.inf), reaped.get(v, math.inf)
        # The exit path sets MMF_OOM_SKIP right after unmap_vmas(): no later than the exit, the next
        # kill (select_bad_process() aborts while it is unset) or memory coming back after the kill.
        # "oom_reaper: reaped process" is printed only when the reaper found MMF_OOM_SKIP unset.
        tn = min([t for t, _, _ in kills[1:]] + [t for t in charged if t > tk], default=math.inf)
        if tr <= t_cut:
            skip_by, first_skip = "reaper", tr
        elif min(te, tn) <= t_cut:
            skip_by, first_skip = "exit", min(te, tn)
    kill_times = {k[0] for k in kills}
    after_kill = [t for t in progress if first_kill is not None and t > first_kill and t not in kill_times]
    pending_end = sum(1 for _, pid, _ in kills if min(exits.get(pid, math.inf), reaped.get(pid, math.inf)) > t_cut)
    victims = {pid: t for t, pid, _ in kills}
    k2e = tuple(exits[p] - t for p, t in victims.items() if p in exits and exits[p] <= t_cut)
    k2r = tuple(reaped[p] - t for p, t in victims.items() if p in reaped)
    pending_max, delay_max, _ = exit_waits([(t, pid) for t, pid, _ in kills], exits, reaped, charged, t_cut)
    gap = exit_gap_max(first_kill, [exits[p] for p in victims if p in exits], t_cut,
                       open_end=any(exits.get(p, math.inf) > t_cut for p in victims))
    preempt = next((m.group(1) for m in [_PREEMPT.search(console)] if m), "")
    reason_text = ""
    if lockup:
        reason_text = "watchdog_stall" + ("+rcu_stall" if rcu else "") + ("+hung_task" if hung else "")
    cpu_s = dict(cpu)
    cpu_s["oom_reaper"] = float(end.get("oom_reaper_cpu_s", "nan"))
    cpu_s["victim"] = math.nan
    cpu_s["ksoftirqd"] = float(end.get("ksoftirqd_cpu_s", "nan"))
    outcome = {
        "lockup": lockup,
        "lockup_reason": reason_text,
        "lockup_detail": "",  # the kernel log names the detectors that fired (the label), nothing more
        "max_stall_s": max_stall,
        "first_progress_s": after_kill[0] if after_kill else None,
        "first_kill_s": first_kill,
        "first_skip_s": first_skip,
        "kills": len(kills),
        "extra_kills": 0,  # see the module docstring
        "handed_over": False,  # 6.1 has no handover
        "handovers": 0,
        "oom_skip_by": skip_by,
        "released_by": skip_by,
        "reaper_attempts": reap_tries,
        "memory_freed_mb": sum(mb for _, _, mb in kills),
        "panic": panic,
        "victims_pending_at_end": pending_end,
        "oom_calls": int(end.get("oom", "0")),
        "sim_time_s": min(t_end, horizon) if not math.isnan(horizon) else t_end,
        "sim_events": len(kills) + len(reaped) + len(exits),
        "exits_pending_max": pending_max,  # see the module docstring: approximate, mostly low
        "exit_delay_max_s": delay_max,
        "cpu_s": cpu_s,
    }
    return KernelRun(outcome, reason, k2e, k2r, after_watchdog, before_exit, rcu, hung, throttled, settings_failed,
                     tuple(errors), exit_gap_max_s=gap, preempt=preempt, topology=guest_topology(console))

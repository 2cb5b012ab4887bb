"""Per-victim records of one patched-kernel boot: who was killed, how big, and how its MMF_OOM_SKIP came.

The boot-level columns of `kernels.kernel_columns` count handovers per boot; comparing the model's
handover rate with the kernel's needs them per victim (issue: the model hands over 4-20x more
often per kill than the 5.10 boots). From the console excerpt (`kernel_log.kernel_lines`) and the
oomsweep instruments (`kernels.parse_instruments`):

- `anon_rss_kb`, `pgtables_kb`, `total_vm_kb`: mm/oom_kill.c:__oom_kill_process()'s "Killed process"
  line, i.e. the victim's RSS counters at the kill (5.10: anon-rss counts pages a child shares
  copy-on-write with its parent since fork(), which are not charged to the memcg);
- `handed_over`, `kill_to_handover_s`: the reaper's "Handed over N to exit path." line;
- `kill_to_point_s`: the victim's own "oomsweep: handover point pid=N" line (its exit_mmap() reached
  `mm->mmap = NULL` and took mmap_write_lock): short if it ran its exit at once, long if it blocked
  behind the reaper's read lock and was woken at the tail of the FIFO queue;
- `skip_by`, `kill_to_skip_s`: the instrument's "MMF_OOM_SKIP pid=N by=..." (reaper, exit, ...) and when;
- `alive_before`: earlier victims of the boot that had not exited at this kill (their `mmu_gather`s
  may still hold charged pages, oommodel/MODEL.md 1.5).

Only kills before the watchdog's stall declaration count (after it the watchdog kills the children).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sweeps.calibrate.kernel_log import kernel_lines
from sweeps.calibrate.kernels import parse_instruments

_KILL = re.compile(r"Killed process (\d+) \(([^)]*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB.*?pgtables:(\d+)kB")
_EXIT = re.compile(r"oomsweep: exit child=\d+ group=\S+ pid=(\d+)")


@dataclass(frozen=True)
class KernelVictim:
    """One OOM victim of one boot, as its console shows it."""

    index: int                      # 1 = the boot's first kill
    pid: int
    anon_rss_kb: int
    pgtables_kb: int
    total_vm_kb: int
    handed_over: bool
    kill_to_handover_s: float       # nan without a handover
    kill_to_point_s: float          # nan if the victim never reached the handover point in the log
    skip_by: str                    # "reaper", "exit", "timeout", "direct" or "" (never set in the log)
    kill_to_skip_s: float           # kill -> that MMF_OOM_SKIP line (nan if none)
    alive_before: int               # earlier victims not yet exited at this kill


def boot_victims(console: str) -> list[KernelVictim]:
    """The victims of one boot's console, in kill order, up to the watchdog's stall declaration."""
    lines = kernel_lines(console)
    ins = parse_instruments(console)
    stall_at = next((t for t, msg in lines if msg.startswith("oomsweep: stall t=")), math.inf)
    exits: dict[int, float] = {}
    kills: list[tuple[float, re.Match[str]]] = []
    seen: set[int] = set()
    for t, msg in lines:
        if (k := _KILL.search(msg)) and int(k.group(1)) not in seen:
            seen.add(int(k.group(1)))
            kills.append((t, k))
        elif e := _EXIT.search(msg):
            exits.setdefault(int(e.group(1)), t)
    handed = {pid: t for t, pid in ins.handed_over}
    out: list[KernelVictim] = []
    for t, k in kills:
        if t >= stall_at:
            break
        pid = int(k.group(1))
        alive = sum(1 for v in out if exits.get(v.pid, math.inf) > t)
        point = ins.handover_points.get(pid)
        out.append(KernelVictim(
            index=len(out) + 1, pid=pid, anon_rss_kb=int(k.group(4)), pgtables_kb=int(k.group(5)),
            total_vm_kb=int(k.group(3)), handed_over=pid in handed,
            kill_to_handover_s=handed[pid] - t if pid in handed else math.nan,
            kill_to_point_s=point - t if point is not None else math.nan,
            skip_by=ins.skip_by[pid][1] if pid in ins.skip_by else "",
            kill_to_skip_s=ins.skip_by[pid][0] - t if pid in ins.skip_by else math.nan, alive_before=alive))
    return out

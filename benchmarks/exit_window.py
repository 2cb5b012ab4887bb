"""The handover window of the 5.10 boots, per victim: kill -> handover point -> MMF_OOM_SKIP.

    python benchmarks/exit_window.py [--max-kb 4096] [--details] [DATASET_DIR ...]

Why: without Handa's hack the patched 5.10 boots hand over 14 of 512 kills (13 to victims of at
most 4 MB), the model 0.011 per kill and its small victims almost never (oommodel/MODEL.md
section 7, "Still apart"). Under RFC v2 a handover needs the oom_reaper to look in the victim's
window between `mm->mmap = NULL` and MMF_OOM_SKIP; the model's window is its `free_pgtables` cost
(`costs.free_pgtables_ms_per_gb` x mapped MB: about 10 us for a 1 MB victim). This prints how
long the boots' windows were and what their timestamps can and cannot say.

What the instruments print, who prints them and where (infra/kernels/patches/5.10):

- "oomsweep: handover point pid=N" (0006, `oomsweep_at_handover()`): the victim itself, in
  `exit_mmap()` right after the `mmap_write_unlock()` that follows `mm->mmap = NULL`;
- "oomsweep: MMF_OOM_SKIP pid=N by=exit" (0001, `oomsweep_set_skip()`): the victim, after
  `test_and_set_bit()` has set the flag, after `__free_pgtables()` and `tlb_finish_mmu()` (0003);
- "Handed over N to exit path." (0006, `oomsweep_handed_over()`): the oom_reaper kthread, after it
  found `mm->mmap == NULL` and MMF_OOM_SKIP still clear.

So point -> skip, both stamped on the victim's CPU (the children are pinned to CPU 0), brackets
the window. A printk timestamp is `local_clock()` when the record is stored, not when a console
prints it. Two facts about these boots bound what the stamps mean, and the script checks both:

- every boot's command line has `loglevel=3`: the instruments are pr_info (level 6), so none of
  them reaches ttyS0 during the run (/init prints dmesg at the end): no serial output in any window;
- the guest marks its TSC unstable ("TSCs unsynchronized": an AMD QEMU vCPU, 8 CPUs), so
  `local_clock()` is kernel/sched/clock.c's per-CPU `sched_clock_local()`, clamped to at most one
  tick (1 ms at HZ 1000) past that CPU's last tick: a CPU that misses ticks repeats a stamp although
  time passes, and stamps of different CPUs disagree by up to about a millisecond. A window of 0
  means "below the resolution", not "no time".

Also printed, as a yardstick of how long one non-sleeping stretch of a FIFO-99 task on CPU 0 can
take in these boots: "X invoked oom-killer" -> that task's "Killed process" line (dump_header() and
oom_kill_process(): no sleeping lock, no yield; only interrupts, or the host not running the vCPU,
can stretch it).

Kernel datasets (default calibration/reference/kernel-5.10 and, if present, kernel-5.10-host-load):
every handoff row (`handoff_rfc_v2`, `handoff_oom_lock`) with `skip_after=pgtables`, parsed per
victim by `sweeps.calibrate.victims.boot_victims` (kills before the watchdog's stall declaration).
With the hack the window also holds the SCHED_IDLE starvation, so only the no-hack groups say how
long the exit path itself takes there. Prints what it measured; never fails on a value.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweeps.calibrate.kernel_log import kernel_lines, stall_declared_at  # noqa: E402
from sweeps.calibrate.kernels import boot_topology  # noqa: E402
from sweeps.calibrate.victims import KernelVictim, boot_victims  # noqa: E402

REF = ROOT / "calibration" / "reference"
HANDOFF = ("handoff_rfc_v2", "handoff_oom_lock")
_LOGLEVEL = re.compile(r"\bloglevel=(\d+)")
PR_INFO = 6  # the instruments' printk level (pr_info); the console prints levels below loglevel


@dataclass(frozen=True)
class Window:
    """One victim that reached its handover point and set MMF_OOM_SKIP itself (by=exit)."""

    boot: str
    victim: KernelVictim
    point_to_skip_ms: float      # point -> MMF_OOM_SKIP by=exit, victim's CPU (0: below the resolution)
    point_to_handover_ms: float  # point -> the reaper's "Handed over" (another CPU), nan without one
    lines_between: int           # kernel log lines stored between the two, any task (of the committed
                                 # excerpt: infra/qemu/excerpt_log.py drops the OOM reports' body lines)
    chars_between: int           # their length as dmesg prints them ("[ssss.uuuuuu] " + message)


@dataclass
class Group:
    """The boots of one dataset, scenario, policy, hack and topology."""

    boots: int = 0
    victims: int = 0
    loglevels: set[int] | None = None
    small: list[KernelVictim] | None = None
    windows: list[Window] | None = None
    report_ms: list[float] | None = None   # "invoked oom-killer" -> "Killed process", same task
    host_share: list[float] | None = None  # QEMU's share of the host CPU per boot (host-load boots)


def _index(lines: list[tuple[float, str]], text: str) -> int | None:
    return next((i for i, (_, m) in enumerate(lines) if m.startswith(text)), None)


def boot_windows(console: str, boot: str, max_kb: int) -> tuple[list[KernelVictim], list[Window], list[float]]:
    """(victims of at most max_kb anon-rss, their windows, OOM-report stretches in ms) of one boot."""
    lines = kernel_lines(console)
    victims = [v for v in boot_victims(console) if v.anon_rss_kb <= max_kb]
    windows: list[Window] = []
    for v in victims:
        if v.skip_by != "exit" or math.isnan(v.kill_to_point_s):
            continue
        i = _index(lines, f"oomsweep: handover point pid={v.pid}")
        j = _index(lines, f"oomsweep: MMF_OOM_SKIP pid={v.pid} by=exit")
        between = lines[i + 1:j] if i is not None and j is not None and j > i else []
        point_to_ho = (v.kill_to_handover_s - v.kill_to_point_s) * 1e3 if v.handed_over else math.nan
        windows.append(Window(boot, v, max(0.0, (v.kill_to_skip_s - v.kill_to_point_s) * 1e3), point_to_ho,
                              len(between), sum(15 + len(m) for _, m in between)))
    stall = stall_declared_at(lines)
    report: list[float] = []
    pending: float | None = None
    for t, m in lines:
        if t >= stall:
            break
        if "invoked oom-killer" in m:
            pending = t
        elif "Killed process" in m and pending is not None:
            report.append((t - pending) * 1e3)
            pending = None
    return victims, windows, report


def _dist(ms: list[float]) -> str:
    if not ms:
        return "none"
    s = sorted(ms)
    p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
    return (f"n {len(s)}: 0 (below resolution) {sum(x == 0.0 for x in s)}, < 1 ms {sum(x < 1.0 for x in s)}, "
            f">= 1 ms {sum(x >= 1.0 for x in s)}, >= 10 ms {sum(x >= 10.0 for x in s)}; median {statistics.median(s):.2f}, "
            f"p90 {p90:.2f}, mean {statistics.mean(s):.2f}, max {s[-1]:.2f} ms")


def collect(dataset: Path, max_kb: int) -> dict[tuple[str, str, str, str, str], Group]:
    """The dataset's handoff boots by (scenario, policy, hack, topology, host load)."""
    groups: dict[tuple[str, str, str, str, str], Group] = defaultdict(Group)
    with open(dataset / "runs.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["kernel_policy"] not in HANDOFF or row["skip_after"] != "pgtables" or row["status"] != "ok":
                continue
            key = (row["scenario"].removesuffix(".yaml"), row["kernel_policy"], row["sched_at_handover"],
                   boot_topology(row.get("command") or ""),
                   # boots before `--host-hogs` existed leave the column empty: the loaded host of kernel-5.10
                   f"host_hogs={row['host_hogs']}" if row.get("host_hogs") else "loaded host")
            g = groups[key]
            console = (dataset / row["log"]).read_text(encoding="utf-8", errors="replace")
            small, windows, report = boot_windows(console, Path(row["log"]).stem[-20:], max_kb)
            g.boots += 1
            g.victims += len(boot_victims(console))
            level = _LOGLEVEL.search(row.get("command") or "")
            g.loglevels = (g.loglevels or set()) | {int(level.group(1)) if level else -1}
            g.small = (g.small or []) + small
            g.windows = (g.windows or []) + windows
            g.report_ms = (g.report_ms or []) + report
            if row.get("host_share"):
                g.host_share = (g.host_share or []) + [float(row["host_share"])]
    return groups


def show(dataset: Path, key: tuple[str, str, str, str, str], g: Group, max_kb: int, details: bool) -> None:
    scenario, policy, sched, topology, host = key
    small, windows = g.small or [], g.windows or []
    by: dict[str, int] = defaultdict(int)
    for v in small:
        by[v.skip_by or "none"] += 1
    levels = sorted(g.loglevels or ())
    quiet = all(0 <= lv <= PR_INFO for lv in levels)
    share = f", QEMU's host share median {statistics.median(g.host_share):.2f}" if g.host_share else ""
    print(f"\n### {dataset.name}: {scenario}, {policy}, sched_at_handover={sched}, {topology}, {host}{share}: {g.boots} boots, "
          f"{g.victims} victims, {len(small)} of <= {max_kb} kB")
    print(f"- console: loglevel {levels} on every command line: the pr_info instruments "
          f"{'never reach ttyS0 during the run (0 serial characters in any window)' if quiet else 'MAY reach ttyS0'}")
    print(f"- small victims' MMF_OOM_SKIP by: {dict(sorted(by.items()))}; handed over "
          f"{sum(v.handed_over for v in small)}")
    print(f"- kill -> handover point (victims that set the flag themselves): "
          f"{_dist([w.victim.kill_to_point_s * 1e3 for w in windows])}")
    print(f"- window, point -> MMF_OOM_SKIP by=exit, handed over: {_dist([w.point_to_skip_ms for w in windows if w.victim.handed_over])}")
    print(f"- window, not handed over: {_dist([w.point_to_skip_ms for w in windows if not w.victim.handed_over])}")
    print(f"- yardstick, 'invoked oom-killer' -> 'Killed process' (one FIFO-99 task on CPU 0, no sleep): "
          f"{_dist(g.report_ms or [])}")
    if details and sched == "unchanged":
        ho = [w for w in windows if w.victim.handed_over]
        if ho:
            print("\n| boot | pid | kill | anon-rss kB | kill -> point ms | kill -> Handed over ms | point -> Handed over ms "
                  "| point -> skip ms | log lines between (chars) |")
            print("|---|---|---|---|---|---|---|---|---|")
            for w in ho:
                v = w.victim
                print(f"| {w.boot} | {v.pid} | {v.index} | {v.anon_rss_kb} | {v.kill_to_point_s * 1e3:.2f} | "
                      f"{v.kill_to_handover_s * 1e3:.2f} | {w.point_to_handover_ms:.2f} | {w.point_to_skip_ms:.2f} | {w.lines_between} ({w.chars_between}) |")
            print(f"\nhanded-over windows holding 0 log lines: {sum(w.lines_between == 0 for w in ho)}/{len(ho)}; "
                  f"stamped 0 ms although the reaper's line lies between: "
                  f"{sum(w.point_to_skip_ms == 0.0 for w in ho)}/{len(ho)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-kb", type=int, default=4096, help="victims of at most this anon-rss (default 4096)")
    ap.add_argument("--details", action="store_true", help="one line per handed-over victim of the no-hack boots")
    ap.add_argument("datasets", nargs="*", type=Path)
    args = ap.parse_args()
    datasets = args.datasets or [d for d in (REF / "kernel-5.10", REF / "kernel-5.10-host-load")
                                 if (d / "runs.csv").exists()]
    for ds in datasets:
        for key, g in sorted(collect(ds, args.max_kb).items()):
            show(ds, key, g, args.max_kb, args.details)


if __name__ == "__main__":
    main()

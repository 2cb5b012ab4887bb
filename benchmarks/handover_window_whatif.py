"""What if the model's OOM victims had the 5.10 boots' handover windows? Rows H (and G) per victim.

    python benchmarks/handover_window_whatif.py [--seeds 100] [--rows H] [--set SECTION.KEY=VALUE ...]

Why: without Handa's hack the 5.10 boots hand over 14/512 kills, 13 of them to victims of <= 4 MB;
model row H 0.011 per kill, almost never to a small victim (oommodel/MODEL.md section 7, "Still
apart"). `benchmarks/exit_window.py` finds the difference in the window between the victim's
`mm->mmap = NULL` and its MMF_OOM_SKIP (RFC v2, 5.10.223 mm/mmap.c:exit_mmap()): the model's is
its `free_pgtables` cost (~10 us for 1 MB), the boots' has a tail of 1-56 ms in 23 of 261 small
victims (below the 1 ms stamp resolution in the rest) that no step of the kernel's path explains.

This runs the rows twice: as the model is, and with every OOM victim's window stretched by a draw
from the boots' measured windows (the no-hack `handoff_rfc_v2` boots of kernel-5.10, victims of at
most 4 MB that set MMF_OOM_SKIP themselves; 0 where the stamps could not resolve it), spent as a
vCPU its host does not run would spend it: the victim keeps its CPU and makes no progress (one
`machine.run()` of that length before `free_pgtables`, stream `whatif_handover_window`). For this
it wraps `oommodel.kernel.exit.exit_phase` inside this process only; `simulate()`, the scenario
keys and every golden outcome are unchanged. A sensitivity check, not a fit: the same draw is
given to large victims, whose real windows free more page tables and gather pages.
`--set` changes a key of every model row (e.g. `costs.unmap_ms_per_gb=1147`, the boots' own unmap
cost, under which the model's victims shrink as the kernel's do). Prints what it measured; never
fails on a value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import oommodel.kernel.exit as exit_module  # noqa: E402
from exit_window import collect  # noqa: E402
from handa_table import kernel_machine  # noqa: E402
from handover_victims import Victim, kernel_victims, model_victims, scenario_sets  # noqa: E402
from oommodel import MODEL_VERSION  # noqa: E402
from oommodel.distributions import Choice  # noqa: E402
from sweeps.analysis.stats import wilson  # noqa: E402

REF = ROOT / "calibration" / "reference"
SMALL_MB = 4.0
ROWS = {"H": ("unchanged", {"victim__sched_at_handover": "unchanged"}), "G": ("idle", {})}


def boots_windows_us() -> tuple[float, ...]:
    """The no-hack handoff_rfc_v2 boots' windows (point -> MMF_OOM_SKIP by=exit), victims <= 4 MB, in us."""
    groups = collect(REF / "kernel-5.10", 4096)
    key = ("handa-2018-11-14", "handoff_rfc_v2", "unchanged", "shared_llc", "loaded host")
    return tuple(round(w.point_to_skip_ms * 1e3, 1) for w in groups[key].windows or [])


@contextmanager
def stretched_windows(windows_us: tuple[float, ...]) -> Iterator[None]:
    """Every OOM victim's exit spends a drawn stretch of CPU time, making no progress, right before
    its `free_pgtables` phase (after `mm->mmap = NULL`, before MMF_OOM_SKIP)."""
    dist = Choice(windows_us)
    original = exit_module.exit_phase

    def exit_phase(state, proc, th, phase):  # same signature as oommodel.kernel.exit.exit_phase
        if phase is exit_module.Phase.FREE_PGTABLES and proc.oom_victim:
            stall_s = float(state.streams.draw(dist, "whatif_handover_window", proc.pid)) / 1e6
            if stall_s > 0.0:
                yield state.machine.run(th, stall_s)
        yield from original(state, proc, th, phase)

    exit_module.exit_phase = exit_phase
    try:
        yield
    finally:
        exit_module.exit_phase = original


def _rate(vs: list[Victim]) -> str:
    k, n = sum(v.handed_over for v in vs), len(vs)
    if n == 0:
        return "–"
    ci = wilson(k, n)
    return f"{k}/{n} = {k / n:.3f} ({ci.low:.3f}–{ci.high:.3f})"


def _line(label: str, vs: list[Victim], lockups: str) -> str:
    small = [v for v in vs if v.size_mb <= SMALL_MB]
    sizes = [v.size_mb for v in vs if v.handed_over]
    med = f"{statistics.median(sizes):.1f} MB" if sizes else "–"
    return f"| {label} | {_rate(vs)} | {_rate(small)} | {med} | {lockups} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--rows", default="H", help="H (no hack) and/or G (hack), e.g. HG")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()
    extra = scenario_sets(ap, args.set)
    windows = boots_windows_us()
    ge1 = sum(w >= 1000.0 for w in windows)
    print(f"model {MODEL_VERSION}, handoff_rfc_v2, seeds 0..{args.seeds - 1}"
          + (f", {', '.join(args.set)}" if args.set else "")
          + f"; boots' windows: {len(windows)} (>= 1 ms: {ge1}; mean {statistics.mean(windows) / 1e3:.2f} ms, "
            f"max {max(windows) / 1e3:.1f} ms)")
    for row in args.rows:
        sched, keys = ROWS[row]
        scenario = kernel_machine("handa-2018-11-14.yaml", **{**keys, **extra})
        kernel, boots, klock = kernel_victims(REF / "kernel-5.10", sched, "shared_llc")
        print(f"\n### Row {row} (sched_at_handover {sched}, shared_llc)\n")
        print("| side | handovers / victims | victims <= 4 MB: handed over / victims | handed-over victim, median size "
              "| lockups |")
        print("|---|---|---|---|---|")
        print(_line(f"kernel 5.10 ({boots} boots)", kernel, f"{klock}/{boots}"))
        as_is, lock0 = model_victims(scenario, args.seeds)
        print(_line("model as is", as_is, f"{lock0}/{args.seeds}"))
        with stretched_windows(windows):
            stretched, lock1 = model_victims(scenario, args.seeds)
        print(_line("model, victims' windows drawn from the boots'", stretched, f"{lock1}/{args.seeds}"))


if __name__ == "__main__":
    main()

"""Handover per victim, kernel against model: by victim size at the kill and by kill index.

    python benchmarks/handover_victims.py [--seeds 200] [--set costs.unmap_ms_per_gb=1147 ...] [DATASET_DIR ...]

Why: under `handoff_rfc_v2` the model hands over in far more kills than the patched 5.10 boots
(oommodel/MODEL.md section 7). Per boot the kernel hands over about once, at its last kill before
the stall; this prints *which* victims are handed over on each side.

Kernel side: every `handoff_rfc_v2` / `skip_after=pgtables` row of each dataset's runs.csv (default:
calibration/reference/kernel-5.10 and, if present, kernel-5.10-host-load), parsed per victim from
the console excerpt by `sweeps.calibrate.victims.boot_victims` (anon-rss of the "Killed process"
line; kills before the watchdog's stall declaration). Model side: the same scenario on the boots'
machine (`benchmarks/handa_table.py`'s rows G, J and H: qemu_tcg profile), seeds 0..N-1, per victim
from the run state `World` leaves behind (`Process.badness_at_kill_mb`, `killed_itself`,
`handover_time`; simulate() itself is unchanged). Groups are matched on `sched_at_handover` and the
boot's topology. `--set SECTION.KEY=VALUE` (YAML value) changes a key of every model row, on top of the
profile: a sensitivity check, not a fit. Prints what it measured; never fails on a value.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys

import yaml
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from handa_table import kernel_machine  # noqa: E402
from oommodel import MODEL_VERSION, POLICIES, Scenario  # noqa: E402
from oommodel.kernel.world import World  # noqa: E402
from sweeps.analysis.stats import wilson  # noqa: E402
from sweeps.calibrate.kernels import boot_topology  # noqa: E402
from sweeps.calibrate.victims import boot_victims  # noqa: E402

REF = ROOT / "calibration" / "reference"
SIZES = ((0.0, 4.0, "<= 4 MB"), (4.0, 50.0, "4-50 MB"), (50.0, 90.0, "50-90 MB"), (90.0, math.inf, "> 90 MB"))
INDEXES = ((1, 1, "1"), (2, 2, "2"), (3, 5, "3-5"), (6, 10, "6-10"), (11, 10**9, "11+"))


@dataclass(frozen=True)
class Victim:
    """One victim, either side: what the comparison groups and counts."""

    index: int
    size_mb: float               # kernel: anon-rss; model: oom_badness() less the adj term
    handed_over: bool
    kill_to_handover_s: float    # nan without a handover
    killed_itself: bool | None   # model only (the kernel's log does not say who invoked the OOM killer)
    skip_by: str
    kill_to_skip_s: float        # kill -> MMF_OOM_SKIP (nan if never set)
    alive_before: int            # earlier victims of the run not yet exited at this kill


def kernel_victims(dataset: Path, sched: str, topology: str) -> tuple[list[Victim], int, int]:
    """(victims, boots, lockups) of the dataset's handoff_rfc_v2/pgtables rows with this hack and topology."""
    out: list[Victim] = []
    boots = lockups = 0
    with open(dataset / "runs.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if (row["scenario"], row["kernel_policy"], row["sched_at_handover"], row["skip_after"], row["status"]) != \
                    ("handa-2018-11-14.yaml", "handoff_rfc_v2", sched, "pgtables", "ok"):
                continue
            if boot_topology(row.get("command") or "") != topology:
                continue
            boots += 1
            lockups += row["lockup"] == "True"
            for v in boot_victims((dataset / row["log"]).read_text(encoding="utf-8", errors="replace")):
                out.append(Victim(v.index, v.anon_rss_kb / 1024.0, v.handed_over, v.kill_to_handover_s, None,
                                  v.skip_by, v.kill_to_skip_s, v.alive_before))
    return out, boots, lockups


def model_victims(scenario: dict, seeds: int) -> tuple[list[Victim], int]:
    """(victims, lockups) of `handoff_rfc_v2` on seeds 0..seeds-1."""
    sc = Scenario.from_dict(scenario)
    pol = POLICIES["handoff_rfc_v2"]
    opts = pol.check_options({})
    out: list[Victim] = []
    lockups = 0
    for seed in range(seeds):
        world = World(sc, pol, opts, seed)
        lockups += world.run().lockup
        skips = {r.pid: r for r in world.state.skip_log}
        victims = world.state.victims
        for i, v in enumerate(victims):
            assert v.kill_time is not None
            ho = v.handover_time - v.kill_time if v.handover_time is not None else math.nan
            skip = skips.get(v.pid)
            alive = sum(1 for u in victims[:i] if u.exit_time is None or u.exit_time > v.kill_time)
            out.append(Victim(i + 1, v.badness_at_kill_mb, v.handed_over, ho, v.killed_itself,
                              skip.by.value if skip else "", skip.time - v.kill_time if skip else math.nan, alive))
    return out, lockups


def _cell(vs: list[Victim]) -> str:
    n = len(vs)
    k = sum(v.handed_over for v in vs)
    if n == 0:
        return "–"
    ci = wilson(k, n)
    return f"{k}/{n} = {k / n:.3f} ({ci.low:.3f}–{ci.high:.3f})"


def _in_size(v: Victim, lo: float, hi: float) -> bool:
    return (lo == 0.0 and v.size_mb <= hi) or lo < v.size_mb <= hi


def _summary(side: str, vs: list[Victim]) -> str:
    ho = [v for v in vs if v.handed_over]
    if not ho:
        return f"{side}: no handover"
    sizes = sorted(v.size_mb for v in ho)
    times = sorted(v.kill_to_handover_s * 1e3 for v in ho)
    own = [v for v in ho if v.killed_itself]
    text = (f"{side}: {len(ho)} handovers; victim size median {statistics.median(sizes):.1f} MB "
            f"(min {sizes[0]:.1f}, max {sizes[-1]:.1f}); kill -> handover median {statistics.median(times):.1f} ms "
            f"(max {times[-1]:.1f})")
    if ho[0].killed_itself is not None:
        text += f"; the victim was the allocator that invoked the OOM killer in {len(own)}/{len(ho)}"
    return text


def compare(label: str, kernel: list[Victim], boots: int, lockups: int, model: list[Victim], seeds: int,
            model_lockups: int) -> None:
    k, m = wilson(lockups, boots), wilson(model_lockups, seeds)
    print(f"\n### {label}: kernel {boots} boots, {len(kernel)} victims, {lockups}/{boots} lockups "
          f"({k.low:.3f}–{k.high:.3f}); model {seeds} seeds, {len(model)} victims, {model_lockups}/{seeds} lockups "
          f"({m.low:.3f}–{m.high:.3f})")
    print("\nBy victim size at the kill (kernel anon-rss; model rss + page tables):\n")
    print("| size | kernel: handed over / victims | model: handed over / victims |")
    print("|---|---|---|")
    for lo, hi, name in SIZES:
        print(f"| {name} | {_cell([v for v in kernel if _in_size(v, lo, hi)])} | "
              f"{_cell([v for v in model if _in_size(v, lo, hi)])} |")
    print(f"| all | {_cell(kernel)} | {_cell(model)} |")
    print("\nBy kill index in the run (1 = first kill):\n")
    print("| kill | kernel: handed over / victims | model: handed over / victims |")
    print("|---|---|---|")
    for lo, hi, name in INDEXES:
        print(f"| {name} | {_cell([v for v in kernel if lo <= v.index <= hi])} | "
              f"{_cell([v for v in model if lo <= v.index <= hi])} |")
    print()
    print("- " + _summary("kernel", kernel))
    print("- " + _summary("model", model))
    if model:
        own = sum(1 for v in model if v.killed_itself)
        print(f"- model: victims that were the allocator invoking the OOM killer: {own}/{len(model)}; "
              f"victims with <= 4 MB: {sum(1 for v in model if v.size_mb <= 4.0)}")
    for side, vs in (("kernel", kernel), ("model", model)):
        print("- " + _race(side, vs))


def _q(ms: list[float]) -> str:
    if not ms:
        return "none"
    ms = sorted(ms)
    return f"median {statistics.median(ms):.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f}, n {len(ms)})"


def _race(side: str, vs: list[Victim]) -> str:
    """The reaper's side of the race: kill -> its MMF_OOM_SKIP for victims > 50 MB and <= 4 MB, and how
    many earlier victims (holding whatever their mmu_gather kept) were still alive at a kill."""
    big = [v.kill_to_skip_s * 1e3 for v in vs if v.size_mb > 50.0 and v.skip_by == "reaper"]
    small = [v.kill_to_skip_s * 1e3 for v in vs if v.size_mb <= 4.0 and v.skip_by == "reaper"]
    alive = [v.alive_before / (v.index - 1) for v in vs if v.index > 1]
    share = f"{statistics.mean(alive):.2f}" if alive else "–"
    return (f"{side}: kill -> MMF_OOM_SKIP by the reaper, victims > 50 MB {_q(big)}; <= 4 MB {_q(small)}; "
            f"mean share of earlier victims still alive at a kill {share}")


def scenario_sets(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, object]:
    """--set SECTION.KEY=VALUE items as kernel_machine() keywords ("section__key": YAML value)."""
    extra: dict[str, object] = {}
    for item in items:
        path, _, value = item.partition("=")
        section, _, key = path.partition(".")
        if not (section and key and value):
            ap.error(f"--set {item!r}: expected SECTION.KEY=VALUE")
        extra[f"{section}__{key}"] = yaml.safe_load(value)
    return extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("datasets", nargs="*", type=Path,
                    help="reference dataset directories (runs.csv + logs/); default: kernel-5.10 [+ kernel-5.10-host-load]")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a scenario key for every model row (e.g. reaper.shared_zap=false)")
    args = ap.parse_args()
    extra = scenario_sets(ap, args.set)
    datasets = args.datasets or [d for d in (REF / "kernel-5.10", REF / "kernel-5.10-host-load") if (d / "runs.csv").exists()]
    print(f"model {MODEL_VERSION}, handoff_rfc_v2, seeds 0..{args.seeds - 1}; kernel datasets: "
          f"{', '.join(str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d) for d in datasets)}"
          + (f"; model rows with {', '.join(args.set)}" if args.set else ""))
    groups = (
        ("G: hack (idle at handover), shared_llc", "idle", "shared_llc",
         kernel_machine("handa-2018-11-14.yaml", **extra)),
        ("J: hack (idle at handover), core_per_socket", "idle", "core_per_socket",
         kernel_machine("handa-2018-11-14.yaml", **{"machine__topology": "core_per_socket", **extra})),
        ("H: no hack, shared_llc", "unchanged", "shared_llc",
         kernel_machine("handa-2018-11-14.yaml", **{"victim__sched_at_handover": "unchanged", **extra})),
    )
    for label, sched, topology, scenario in groups:
        model, model_lockups = model_victims(scenario, args.seeds)
        for ds in datasets:
            kernel, boots, lockups = kernel_victims(ds, sched, topology)
            if boots:
                compare(f"{label} ({ds.name})", kernel, boots, lockups, model, args.seeds, model_lockups)


if __name__ == "__main__":
    main()

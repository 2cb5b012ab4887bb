"""The lockup-rate table of oommodel/MODEL.md section 7: Handa's scenario and its variants, per policy.

    python benchmarks/handa_table.py [--seeds 200]

Runs every policy on seeds 0..N-1 of each variant with the model's defaults (no injected reaper
delay) and prints a Markdown table: handovers, lockups with their Wilson 95 % interval, the median
and 90th percentile of the longest allocator stall. Prints what it measured; never fails on a value.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oommodel import MODEL_VERSION, POLICIES, Scenario, simulate  # noqa: E402
from sweeps.stats import wilson  # noqa: E402

SCEN = ROOT / "configs" / "scenarios"


def _with(base: dict[str, Any], **keys: Any) -> dict[str, Any]:
    d = copy.deepcopy(base)
    for path, value in keys.items():
        section, key = path.split("__")
        d[section][key] = value
    return d


def variants() -> list[tuple[str, dict[str, Any]]]:
    handa = Scenario.from_yaml(SCEN / "handa-2018-11-14.yaml").to_dict()
    return [
        ("handa-2018-11-14 (as shipped: core_per_socket, idle at handover)", handa),
        ("+ machine.topology: shared_llc", _with(handa, machine__topology="shared_llc")),
        ("+ victim.sched_at_handover: unchanged", _with(handa, victim__sched_at_handover="unchanged")),
        ("+ machine.preempt: none", _with(handa, machine__preempt="none")),
        ("handa-variant-idle-children (shared_llc)",
         Scenario.from_yaml(SCEN / "handa-variant-idle-children.yaml").to_dict()),
        ("handa-variant-idle-children + core_per_socket",
         _with(Scenario.from_yaml(SCEN / "handa-variant-idle-children.yaml").to_dict(),
               machine__topology="core_per_socket")),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    args = ap.parse_args()
    print(f"model {MODEL_VERSION}, seeds 0..{args.seeds - 1}\n")
    print("| scenario | policy | handed over | lockups (Wilson 95 %) | median stall s | p90 stall s |")
    print("|---|---|---|---|---|---|")
    for label, d in variants():
        sc = Scenario.from_dict(d)
        for policy in sorted(POLICIES):
            outs = [simulate(sc, policy, seed) for seed in range(args.seeds)]
            n = len(outs)
            k = sum(o.lockup for o in outs)
            ci = wilson(k, n)
            stalls = sorted(o.max_stall_s for o in outs)
            p90 = stalls[min(n - 1, int(0.9 * n))]
            print(f"| {label} | `{policy}` | {sum(o.handed_over for o in outs)}/{n} | "
                  f"{k}/{n} ({ci.low:.3f}–{ci.high:.3f}) | {statistics.median(stalls):.3f} | {p90:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()

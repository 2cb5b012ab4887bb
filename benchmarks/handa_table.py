"""The lockup-rate table of oommodel/MODEL.md section 7: Handa's scenario and its variants, per policy.

    python benchmarks/handa_table.py [--seeds 200]

Runs every policy on seeds 0..N-1 of each variant with the model's defaults (no injected reaper
delay) and prints a Markdown table: handovers, lockups with their Wilson 95 % interval, the median
and 90th percentile of the longest allocator stall. Prints what it measured; never fails on a value.
"""

from __future__ import annotations

import argparse
import copy

import yaml
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oommodel import MODEL_VERSION, POLICIES, Scenario, simulate  # noqa: E402
from oommodel.profiles import profile_values  # noqa: E402
from sweeps.analysis.stats import wilson  # noqa: E402

SCEN = ROOT / "configs" / "scenarios"


def _with(base: dict[str, Any], **keys: Any) -> dict[str, Any]:
    d = copy.deepcopy(base)
    for path, value in keys.items():
        section, key = path.split("__")
        d[section][key] = value
    return d


def _raw(name: str, **keys: Any) -> dict[str, Any]:
    """A scenario file as written, with keys set: read raw so that `machine.profile` fills every key."""
    d = yaml.safe_load((SCEN / name).read_text(encoding="utf-8"))
    for path, value in keys.items():
        section, key = path.split("__")
        d.setdefault(section, {})[key] = value
    return Scenario.from_dict(d).to_dict()


def kernel_machine(name: str, **keys: Any) -> dict[str, Any]:
    """The machine the 5.10 kernel boots ran on (calibration/reference/kernel-5.10): QEMU 7.2's plain
    -smp 8 (one socket, one shared L3) and the qemu_tcg profile: TCG costs fitted on the 6.1 boots and
    `machine.idle_exit_us`, the oom_reaper's wake-up onto an idle vCPU, measured on the 5.10 boots
    themselves (the profile's `sources` say which boots and how). Nothing here sets it by hand."""
    return _raw(name, **{"machine__topology": "shared_llc", "machine__profile": "qemu_tcg", **keys})


HOST_LOAD = ROOT / "calibration" / "reference" / "kernel-5.10-host-load"


def host_wake_delay(hogs: int) -> dict[str, list[float]]:
    """`machine.idle_exit_us` as measured on the boots of calibration/reference/kernel-5.10-host-load
    beside `hogs` busy loops (0: an otherwise idle host): the same estimator and lognormal summary
    as the qemu_tcg profile's value (sweeps/calibrate/measured.py), on those boots' victims with
    nothing to reap. The profile's value came from boots on a host loaded by other jobs."""
    import csv

    from sweeps.calibrate.fit import round_sig
    from sweeps.calibrate.measured import lognormal_from_quantiles, reaper_wake_delays

    with (HOST_LOAD / "runs.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok" and int(r["host_hogs"] or 0) == hogs]
    us = [d * 1e6 for r in rows for d in reaper_wake_delays((HOST_LOAD / r["log"]).read_text(), 2048)]
    mu, sigma = lognormal_from_quantiles(us)
    return {"lognormal": [round_sig(mu), round_sig(sigma)]}


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
        ("handa-2018-11-14 on the 5.10 boots' machine (shared_llc, qemu_tcg incl. idle_exit_us)",
         kernel_machine("handa-2018-11-14.yaml")),
        ("G + victim.sched_at_handover: unchanged",
         kernel_machine("handa-2018-11-14.yaml", victim__sched_at_handover="unchanged")),
        ("handa-variant-idle-children on the 5.10 boots' machine",
         kernel_machine("handa-variant-idle-children.yaml")),
        ("G booted as the file says: -smp 8,sockets=8,cores=1 (core_per_socket)",
         kernel_machine("handa-2018-11-14.yaml", machine__topology="core_per_socket")),
        ("G with the reaper's wake-up measured on an idle host (kernel-5.10-host-load, no hogs)",
         kernel_machine("handa-2018-11-14.yaml", machine__idle_exit_us=host_wake_delay(0))),
        ("J with the reaper's wake-up measured on an idle host",
         kernel_machine("handa-2018-11-14.yaml", machine__topology="core_per_socket",
                        machine__idle_exit_us=host_wake_delay(0))),
        ("G with the reaper's wake-up measured beside 2 host hogs",
         kernel_machine("handa-2018-11-14.yaml", machine__idle_exit_us=host_wake_delay(2))),
        ("J with the reaper's wake-up measured beside 2 host hogs",
         kernel_machine("handa-2018-11-14.yaml", machine__topology="core_per_socket",
                        machine__idle_exit_us=host_wake_delay(2))),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--variants", default="", help="only these rows, by their first letter, e.g. GHI (A..F: the unlettered rows in order)")
    args = ap.parse_args()
    tcg = profile_values("qemu_tcg")
    print(f"model {MODEL_VERSION}, seeds 0..{args.seeds - 1}; rows G-J: qemu_tcg profile "
          f"{', '.join(f'{k}={v}' for k, v in tcg.items())}\n")
    print("| scenario | policy | handed over | lockups (Wilson 95 %) | median stall s | p90 stall s | kills | handovers/kill |")
    print("|---|---|---|---|---|---|---|---|")
    for letter, (label, d) in zip("ABCDEFGHIJKLMNOP", variants()):
        if args.variants and letter not in args.variants:
            continue
        sc = Scenario.from_dict(d)
        for policy in sorted(POLICIES):
            outs = [simulate(sc, policy, seed) for seed in range(args.seeds)]
            n = len(outs)
            k = sum(o.lockup for o in outs)
            ci = wilson(k, n)
            stalls = sorted(o.max_stall_s for o in outs)
            p90 = stalls[min(n - 1, int(0.9 * n))]
            kills = sum(o.kills for o in outs)
            handovers = sum(o.handovers for o in outs)
            print(f"| {letter}: {label} | `{policy}` | {sum(o.handed_over for o in outs)}/{n} | "
                  f"{k}/{n} ({ci.low:.3f}–{ci.high:.3f}) | {statistics.median(stalls):.3f} | {p90:.3f} | "
                  f"{kills} | {handovers / kills if kills else 0.0:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()

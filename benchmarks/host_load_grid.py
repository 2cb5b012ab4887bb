"""Model row G (Handa on the 5.10 boots' machine) with the reaper's wake-up of a loaded or an idle host,
and the profile's or the 5.10 boots' unmap cost: oommodel/MODEL.md section 7, "The host's load".

    python benchmarks/host_load_grid.py [--seeds 100] [--unmap 1147]

The idle-host wake-up is estimated at run time from calibration/reference/kernel-5.10-host-load
(`handa_table.host_wake_delay`, the profile's own estimator); the loaded-host one is the qemu_tcg
profile's. `--unmap` is the 5.10 boots' own zap, ms per GB (a FIFO victim's self-reap of ~100 MB
under `upstream_5_10` without the hack: median 1147, MODEL.md section 7), a sensitivity, not a fit.
Prints lockups and handovers per kill under `handoff_rfc_v2` with Wilson 95 % intervals; never fails
on a value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import handa_table as h  # noqa: E402
from oommodel import MODEL_VERSION, Scenario, simulate  # noqa: E402
from sweeps.analysis.stats import wilson  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--unmap", type=float, default=1147.0, help="the other unmap cost, ms per GB")
    args = ap.parse_args()
    idle = h.host_wake_delay(0)
    print(f"model {MODEL_VERSION}, row G, handoff_rfc_v2, seeds 0..{args.seeds - 1}; idle-host wake-up {idle}\n")
    print("| reaper wake-up | unmap ms/GB | lockups | handovers per kill |")
    print("|---|---|---|---|")
    for label, wake in (("loaded host (profile)", None), ("idle host (kernel-5.10-host-load)", idle)):
        for unmap in (None, args.unmap):
            keys: dict = {}
            if wake is not None:
                keys["machine__idle_exit_us"] = wake
            if unmap is not None:
                keys["costs__unmap_ms_per_gb"] = unmap
            sc = Scenario.from_dict(h.kernel_machine("handa-2018-11-14.yaml", **keys))
            outs = [simulate(sc, "handoff_rfc_v2", s) for s in range(args.seeds)]
            k = sum(o.lockup for o in outs)
            kills = sum(o.kills for o in outs)
            hv = sum(o.handovers for o in outs)
            ci, cr = wilson(k, args.seeds), wilson(hv, kills)
            print(f"| {label} | {unmap or 'profile'} | {k}/{args.seeds} ({ci.low:.2f}–{ci.high:.2f}) | "
                  f"{hv}/{kills} = {hv / kills:.3f} ({cr.low:.3f}–{cr.high:.3f}) |", flush=True)


if __name__ == "__main__":
    main()

"""Golden outcomes of `simulate`: a behaviour fingerprint for refactorings that must not change results.

    python benchmarks/golden_outcomes.py OUT.json          # compute every run, write canonical JSON
    python benchmarks/golden_outcomes.py --compare A B     # list the differences between two files

Runs every policy in `oommodel.POLICIES` x every `configs/scenarios/*.yaml` x seeds 0..14, plus a
few variants (Handa with `reaper.busy_elsewhere_p: 0.02`, every scenario with `machine.preempt: full`
or `none` flipped), plus every scenario under four stresses that end in each kind of lockup
(seeds 0..4: a reaper busy elsewhere, ->close() waiting for memory, timers left to ksoftirqd, an
mmap_sem writer at kill), and writes one record per run with every Outcome field; floats are rounded to
9 significant digits so a file is stable across processes. `--compare` prints each differing field
and exits 1 if a field other than `sim_events` differs (a refactoring may merge events; it may not
change what is computed). Generated files are not to be committed.

Files from before `Outcome.lockup_detail` (one `lockup_reason` text "label: detail") compare with
files after it (label in `lockup_reason`, particulars in `lockup_detail`): when only one side of
a record has `lockup_detail`, that side's pair is joined back into the old text ("" stays "")
and compared with the other side's `lockup_reason`; the label must also be a `LockupReason`
value. When both sides have it, the two fields are compared as they are.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The model of *this* checkout, not the editable install (which may point at another worktree).
sys.path.insert(0, str(ROOT))

from oommodel import POLICIES, Outcome, Scenario, simulate  # noqa: E402

try:
    from oommodel.outcome import LockupReason  # noqa: E402
    LOCKUP_LABELS = {r.value for r in LockupReason}
except ImportError:  # a checkout from before the label: its files never need the check
    LOCKUP_LABELS = set()

SEEDS = range(15)
STRESS_SEEDS = range(5)
# Tweaks that drive runs into the lockup causes (so describe_stall's every branch is fingerprinted).
STRESSES: dict[str, dict[str, dict[str, Any]]] = {
    "busy_reaper": {"reaper": {"busy_elsewhere_p": 1.0, "busy_elsewhere_s": 30.0}},
    "close_blocks": {"costs": {"close_blocks_on_memory_p": 1.0}},
    "ksoftirqd": {"machine": {"softirq": "ksoftirqd_defer", "ksoftirqd_awake_p": 1.0}},
    "mmap_writer": {"mmap_sem": {"writer_at_kill_p": 1.0, "writer_hold_ms": 60000}},
}
EVENTS_ONLY = {"sim_events"}


def _canon(v: Any) -> Any:
    """Floats to 9 significant digits, recursively; everything else as is."""
    if isinstance(v, float):
        return float(f"{v:.9g}")
    if isinstance(v, dict):
        return {k: _canon(v[k]) for k in sorted(v)}
    if isinstance(v, (list, tuple)):
        return [_canon(x) for x in v]
    return v


def variants() -> Iterator[tuple[str, dict[str, Any], range]]:
    """(label, scenario dict, seeds) for every reference scenario and the extra variants."""
    for path in sorted((ROOT / "configs" / "scenarios").glob("*.yaml")):
        base = Scenario.from_yaml(path).to_dict()
        yield path.stem, base, SEEDS
        flipped = copy.deepcopy(base)
        machine = flipped.setdefault("machine", {})
        machine["preempt"] = "none" if machine.get("preempt") == "full" else "full"
        yield f"{path.stem}+preempt={machine['preempt']}", flipped, SEEDS
        if path.stem == "handa-2018-11-14":
            busy = copy.deepcopy(base)
            busy.setdefault("reaper", {})["busy_elsewhere_p"] = 0.02
            yield f"{path.stem}+busy_elsewhere_p=0.02", busy, SEEDS
        for name, tweak in STRESSES.items():
            stressed = copy.deepcopy(base)
            for section, values in tweak.items():
                stressed.setdefault(section, {}).update(values)
            yield f"{path.stem}+{name}", stressed, STRESS_SEEDS


def compute() -> list[dict[str, Any]]:
    records = []
    for label, d, seeds in variants():
        sc = Scenario.from_dict(d)
        for policy in sorted(POLICIES):
            for seed in seeds:
                out = simulate(sc, policy, seed)
                rec = {"scenario": label, "policy": policy, "seed": seed}
                rec.update({f: _canon(getattr(out, f)) for f in Outcome.field_names()})
                records.append(rec)
    return records


def _key(rec: dict[str, Any]) -> tuple[str, str, int]:
    return rec["scenario"], rec["policy"], rec["seed"]


def _joined(rec: dict[str, Any]) -> dict[str, Any]:
    """rec with lockup_reason (label) + lockup_detail joined into the one text lockup_reason was."""
    out = dict(rec)
    label, detail = out["lockup_reason"], out.pop("lockup_detail")
    if label and label not in LOCKUP_LABELS:
        raise ValueError(f"{_key(rec)}: lockup_reason {label!r} is not a LockupReason label")
    out["lockup_reason"] = f"{label}: {detail}" if label else ""
    return out


def _same_form(x: dict[str, Any], y: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both records in the form of the older one (see the module docstring)."""
    if ("lockup_detail" in x) == ("lockup_detail" in y):
        return x, y
    return (_joined(x), y) if "lockup_detail" in x else (x, _joined(y))


def compare(a: Path, b: Path) -> int:
    ra = {_key(r): r for r in json.loads(a.read_text())}
    rb = {_key(r): r for r in json.loads(b.read_text())}
    bad = 0
    ev_a = ev_b = 0
    for k in sorted(set(ra) | set(rb)):
        if k not in ra or k not in rb:
            print(f"{k}: only in {'B' if k not in ra else 'A'}")
            bad += 1
            continue
        x, y = _same_form(ra[k], rb[k])
        ev_a += x["sim_events"]
        ev_b += y["sim_events"]
        for f in sorted(set(x) | set(y)):
            if x.get(f) != y.get(f):
                print(f"{k} {f}: {x.get(f)!r} -> {y.get(f)!r}")
                if f not in EVENTS_ONLY:
                    bad += 1
    print(f"{len(ra)} vs {len(rb)} records; {bad} differences outside sim_events; "
          f"sim_events total {ev_a} -> {ev_b} ({(ev_b - ev_a) / max(ev_a, 1):+.1%})")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.out is None:
        ap.error("give OUT.json or --compare A B")
    t0 = time.process_time()
    records = compute()
    args.out.write_text(json.dumps(records, indent=0, sort_keys=True) + "\n")
    print(f"{len(records)} runs written to {args.out} ({time.process_time() - t0:.0f} s CPU)")


if __name__ == "__main__":
    main()

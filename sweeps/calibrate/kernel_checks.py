"""Kernel check sets: a patched kernel's boots, each row checked against the model under its own policy.

The fit (sweeps/calibrate/fit.py) is made and checked on stock 6.1 boots, under one model policy
(`upstream_6_1`). A patched kernel (infra/kernels: `5.10-oomsweep`, every policy of the 2018 thread
chosen at boot) gives ground truth for the other policies: the handover itself, who set
MMF_OOM_SKIP, lockups. A `kernel_checks:` entry of calibration/reference/manifest.yaml names such
a dataset (a runs.csv written by `python -m sweeps.calibrate.kernels measure`) and the rows to
check, grouped as `kernels table` groups them (scenario x kernel policy x sched_at_handover x
skip_after x boot topology). Each row becomes one `fit.CheckScenario`:

- kernel side: the row's boots (status ok, of the patch hashes the entry names), as outcome dicts
  (`kernel_outcome`): counts before the watchdog's stall declaration, as the table counts them;
- model side: the scenario as booted (a reference copy, `scenarios:`), with the boot's topology,
  its `victim.sched_at_handover` (Handa's hack, `oomsweep.sched_at_handover=`), the kernel's
  machine.hz / preempt / softirq (`machine:`, checked against the softirq handling of the rows'
  kernel release: sweeps/calibrate/stock_kernels.py), under the model policy of the kernel
  policy's name with its `skip_after` option where the kernel set it.

These rows are checked, never fitted on: they do not reach fit.fit_plan, so no fitted value
depends on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweeps.calibrate.fit import STATISTICS, CheckScenario
from sweeps.calibrate.runs_csv import read_runs_csv
from sweeps.errors import ReferenceError

ROW_KEYS = ("scenario", "policy", "sched_at_handover", "skip_after", "topology")
MACHINE_KEYS = ("hz", "preempt", "softirq")
ENTRY_KEYS = frozenset({"name", "dataset", "patch_hash", "machine", "scenarios", "compare", "rows", "note"})


@dataclass(frozen=True)
class CheckRow:
    """One group of boots: the columns `kernels table` groups a runs.csv by."""

    scenario: str            # runs.csv `scenario` (the file name the boots were made from)
    policy: str              # runs.csv `kernel_policy`: also the model policy
    sched_at_handover: str   # "idle" (Handa's hack) | "unchanged"
    skip_after: str          # "pgtables" | "close" (handoff_rfc_v2 only)
    topology: str            # from the boot's QEMU -smp (kernels.boot_topology)

    def matches(self, r: Mapping[str, str]) -> bool:
        return (r.get("scenario"), r.get("kernel_policy"), r.get("sched_at_handover"), r.get("skip_after"),
                r.get("topology")) == (self.scenario, self.policy, self.sched_at_handover, self.skip_after,
                                       self.topology)

    def label(self) -> str:
        return f"{Path(self.scenario).stem} {self.policy} {self.sched_at_handover}/{self.skip_after} {self.topology}"


@dataclass(frozen=True)
class KernelCheckSet:
    name: str                            # the agreement summary says "held-out NAME"
    dataset: str                         # runs.csv, relative to the reference root
    patch_hashes: tuple[str, ...]        # the builds whose boots are comparable (the dataset's README says)
    machine: Mapping[str, Any]           # machine.hz / preempt / softirq of that kernel
    scenarios: Mapping[str, str]         # runs.csv scenario name -> the reference copy as booted
    compare: tuple[str, ...]
    rows: tuple[CheckRow, ...]
    note: str = ""


def parse_check_set(entry: Any, where: str) -> KernelCheckSet:
    """One `kernel_checks:` entry, validated; a bad one raises ReferenceError naming the key."""
    if not isinstance(entry, Mapping):
        raise ReferenceError(f"{where}: must be a mapping")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise ReferenceError(f"{where}.{key}: unknown key (known: {', '.join(sorted(ENTRY_KEYS))})")
    for key in ("name", "dataset", "patch_hash", "machine", "scenarios", "compare", "rows"):
        if key not in entry:
            raise ReferenceError(f"{where}: {key}: required key is missing")
    hashes = entry["patch_hash"] if isinstance(entry["patch_hash"], list) else [entry["patch_hash"]]
    if not hashes or not all(isinstance(h, str) and h for h in hashes):
        raise ReferenceError(f"{where}.patch_hash: must be a patch hash or a list of them (runs.csv column patch_hash)")
    machine = entry["machine"]
    if not isinstance(machine, Mapping) or set(machine) != set(MACHINE_KEYS):
        raise ReferenceError(f"{where}.machine: must set exactly {', '.join(MACHINE_KEYS)} (the kernel's build options)")
    scenarios = entry["scenarios"]
    if not isinstance(scenarios, Mapping) or not scenarios:
        raise ReferenceError(f"{where}.scenarios: must map a runs.csv scenario name to its reference copy")
    compare = entry["compare"]
    if not isinstance(compare, list) or not compare:
        raise ReferenceError(f"{where}.compare: must be a list of statistics")
    for i, stat in enumerate(compare):
        if stat not in STATISTICS:
            raise ReferenceError(f"{where}.compare[{i}]: unknown statistic {stat!r} (known: {', '.join(STATISTICS)})")
    rows_in = entry["rows"]
    if not isinstance(rows_in, list) or not rows_in:
        raise ReferenceError(f"{where}.rows: must be a list of {{{', '.join(ROW_KEYS)}}}")
    rows = []
    for i, r in enumerate(rows_in):
        rwhere = f"{where}.rows[{i}]"
        if not isinstance(r, Mapping):
            raise ReferenceError(f"{rwhere}: must be a mapping of {', '.join(ROW_KEYS)}")
        for key in r:
            if key not in ROW_KEYS:
                raise ReferenceError(f"{rwhere}.{key}: unknown key (known: {', '.join(ROW_KEYS)})")
        for key in ROW_KEYS:
            if key not in r:
                raise ReferenceError(f"{rwhere}: {key}: required key is missing")
        row = CheckRow(*(str(r[k]) for k in ROW_KEYS))
        if row.scenario not in scenarios:
            raise ReferenceError(f"{rwhere}.scenario: {row.scenario!r} has no reference copy in {where}.scenarios")
        if row in rows:
            raise ReferenceError(f"{rwhere}: the same row twice")
        rows.append(row)
    return KernelCheckSet(name=str(entry["name"]), dataset=str(entry["dataset"]),
                          patch_hashes=tuple(str(h) for h in hashes), machine=dict(machine),
                          scenarios={str(k): str(v) for k, v in scenarios.items()}, compare=tuple(compare),
                          rows=tuple(rows), note=str(entry.get("note", "")))


def kernel_outcome(r: Mapping[str, str]) -> dict[str, Any]:
    """A runs.csv row as the outcome fields the check compares; kills and handovers are counted before
    the watchdog's stall declaration (after it, the reproducer's watchdog kills the children itself)."""
    kills = int(r.get("kills_before_stall") or r["kills"] or 0)
    handovers = int(r.get("handovers_before_stall") or r["handovers"] or 0)
    return {"lockup": r["lockup"] == "True", "kills_before_stall": kills, "handovers_before_stall": handovers,
            "handed_over": handovers > 0, "oom_skip_by": r["skip_by_first"]}


def model_scenario(raw: Mapping[str, Any], row: CheckRow, machine: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario as booted, with the row's topology and hack and the kernel's hz / preempt / softirq."""
    import copy

    sc = copy.deepcopy(dict(raw))
    sc.setdefault("machine", {}).update({**machine, "topology": row.topology})
    sc.setdefault("victim", {})["sched_at_handover"] = row.sched_at_handover
    return sc


def load_check_set(root: Path, cs: KernelCheckSet, where: str, digest: Any, files: list[str]) -> list[CheckScenario]:
    """The check scenarios of one set: its rows' boots and model scenarios, all validated before any run."""
    from oommodel import POLICIES, Scenario, ScenarioError

    from sweeps.calibrate.stock_kernels import softirq_of

    raws: dict[str, dict[str, Any]] = {}
    for name, rel in cs.scenarios.items():
        path = root / rel
        try:
            raws[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ReferenceError(f"{where}.scenarios.{name}: {exc}") from None
        digest.update(path.read_bytes())
        files.append(str(path.relative_to(root)))
    boots = [r for r in read_runs_csv(root, cs.dataset, where, digest, files)
             if r.get("status") == "ok" and r.get("patch_hash") in cs.patch_hashes]
    out = []
    for i, row in enumerate(cs.rows):
        rwhere = f"{where}.rows[{i}]"
        mine = [r for r in boots if row.matches(r)]
        if not mine:
            raise ReferenceError(f"{rwhere}: no ok boot of {cs.dataset} with patch hash {'/'.join(cs.patch_hashes)} "
                        f"is {row.label()}")
        for release in sorted({r.get("kernel_release", "") for r in mine}):
            if softirq_of(release) != cs.machine["softirq"]:
                raise ReferenceError(f"{where}.machine.softirq: {cs.machine['softirq']!r}, but kernel {release} handles "
                            f"softirqs {softirq_of(release)!r}")
        if row.policy not in POLICIES:
            raise ReferenceError(f"{rwhere}.policy: the model has no policy {row.policy!r}")
        options = {} if row.skip_after == "pgtables" else {"skip_after": row.skip_after}
        sc = model_scenario(raws[row.scenario], row, cs.machine)
        try:
            Scenario.from_dict(sc)
            POLICIES[row.policy].check_options(options)
        except (ScenarioError, ValueError) as exc:
            raise ReferenceError(f"{rwhere}: {exc}") from None
        out.append(CheckScenario(row.label(), sc, [kernel_outcome(r) for r in mine], cs.compare,
                                 policy=row.policy, options=options, scenario_set=cs.name))
    return out

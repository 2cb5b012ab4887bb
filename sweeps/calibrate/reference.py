"""The calibration reference dataset: real kernel runs with provenance, and the fit plan over them.

Layout (calibration/reference/, see its README.md):

    manifest.yaml            scenarios, runs, the fit plan, the measured values and the check table's statistics
    scenarios/<name>.yaml    each scenario exactly as it was booted (after --match-kernel, if used)
    logs/<name>/<run>.log    console excerpts (infra/qemu/excerpt_log.py) of the boots
    kernel-5.10/runs.csv     a patched kernel's boots (sweeps/calibrate/kernels.py measure), with logs/

A `kernel_checks:` entry names such a runs.csv and the rows of it the fit's check runs under their
own model policies (sweeps/calibrate/kernel_checks.py); nothing is fitted on them.

A `measure:` entry names a value read straight from such a runs.csv's console excerpts
(sweeps/calibrate/measured.py), not fitted through the model: the rows it uses (`where`, by runs.csv
column; `topology` is read from the boot's QEMU -smp) and the estimator.

A run is either a console log, parsed here with sweeps' kernel log parser into the model's outcome
fields, or a `summary`: the outcome fields a document recorded for a boot whose console was not
kept (oommodel/MODEL.md section 6), with its `source`. Only what the summary states is known; every
other field is missing and no statistic is taken from it.

The model side runs each scenario file as it is, so its `machine.topology` must be the topology the
boots had: a run's `smp` (QEMU's -smp value; absent = plain `-smp N`, one socket sharing the L3,
i.e. `shared_llc`, how every boot before 2026-12-02 14:30 UTC ran) must present it, and a log whose
/init printed the guest's topology must show its LLC groups. Otherwise the dataset is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.calibrate.fit import STATISTICS, CheckScenario, Target
from sweeps.calibrate.kernel_checks import KernelCheckSet, load_check_set, parse_check_set
from sweeps.calibrate.measured import ESTIMATORS, MeasuredRun, MeasuredTarget
from sweeps.calibrate.runs_csv import read_runs_csv
from sweeps.errors import InputError, ReferenceError  # noqa: F401 (ReferenceError: raised here, imported from here)

DEFAULT_REFERENCE = "calibration/reference"


@dataclass(frozen=True)
class Run:
    id: str
    outcome: dict[str, Any]
    kind: str                     # "log" | "summary"
    provenance: dict[str, Any]


@dataclass(frozen=True)
class RefScenario:
    name: str
    raw: dict[str, Any]           # the scenario as booted (raw YAML: a profile can still fill its costs)
    role: str                     # "fit" | "check"
    runs: tuple[Run, ...]
    compare: tuple[Any, ...]      # statistics of the agreement table: names or {statistic, where}
    path: str


@dataclass(frozen=True)
class Reference:
    root: Path
    policy: str
    plan: tuple[Target, ...]
    scenarios: dict[str, RefScenario]
    digest: str                   # sha256 over the manifest, scenario files and logs
    files: tuple[str, ...] = field(default=())
    measured: tuple[tuple[MeasuredTarget, tuple[MeasuredRun, ...]], ...] = field(default=())
    # `kernel_checks:` sets (sweeps/calibrate/kernel_checks.py): checked, never fitted on
    kernel_check_sets: tuple[KernelCheckSet, ...] = field(default=())
    kernel_checks: tuple[CheckScenario, ...] = field(default=())

    def kernel(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        return {n: [(r.id, r.outcome) for r in s.runs] for n, s in self.scenarios.items()}

    def raw_scenarios(self) -> dict[str, dict[str, Any]]:
        return {n: s.raw for n, s in self.scenarios.items()}


def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ReferenceError(f"{where}: {key}: required key is missing")
    return d[key]


def _scenario_topology(raw: Mapping[str, Any], where: str) -> Any:
    """The QEMU topology (translate.GuestTopology) that presents the scenario's machine.topology."""
    from oommodel import Scenario

    from sweeps.calibrate.translate import guest_topology

    try:
        return guest_topology(Scenario.from_dict(raw).to_dict()["machine"])
    except InputError as exc:
        raise ReferenceError(f"{where}: {exc}") from None


def _boot_topology(run: Mapping[str, Any], want: Any, where: str) -> str:
    """The topology the run was booted with (its `smp`, else plain -smp: shared_llc), checked against
    the scenario's; returns it in machine.topology's words for the run's provenance."""
    from sweeps.calibrate.translate import GuestTopology

    smp = run.get("smp")
    try:
        had = GuestTopology.from_smp(str(smp)) if smp is not None else GuestTopology(want.cpus, 1, want.cpus)
    except ValueError:
        raise ReferenceError(f"{where}.smp: {smp!r} is not a QEMU -smp value (N,sockets=S,cores=C,threads=1)") from None
    if (had.cpus, had.llc_groups) != (want.cpus, want.llc_groups):
        how = f"-smp {smp}" if smp is not None else f"plain -smp {want.cpus} (no smp: key)"
        raise ReferenceError(f"{where}.smp: booted with {how}, i.e. {had.name}, but the scenario's machine.topology "
                             f"is {want.name}: the model side must run the topology the boot had")
    return had.name


def _measure_target(t: Any, where: str) -> MeasuredTarget:
    if not isinstance(t, Mapping):
        raise ReferenceError(f"{where}: must be a mapping")
    est = _need(t, "estimator", where)
    if est not in ESTIMATORS:
        raise ReferenceError(f"{where}.estimator: unknown {est!r} (known: {', '.join(ESTIMATORS)})")
    sel = t.get("where") or {}
    if not isinstance(sel, Mapping):
        raise ReferenceError(f"{where}.where: must be a mapping of runs.csv column -> value or list of values")
    try:
        limit = int(_need(t, "anon_rss_max_kb", where))
    except (TypeError, ValueError):
        raise ReferenceError(f"{where}.anon_rss_max_kb: must be an integer (kB)") from None
    return MeasuredTarget(key=str(_need(t, "key", where)), estimator=est, dataset=str(_need(t, "dataset", where)),
                          where={str(k): tuple(str(x) for x in (v if isinstance(v, list) else [v]))
                                 for k, v in sel.items()},
                          anon_rss_max_kb=limit, note=str(t.get("note", "")))


def _measured_runs(root: Path, target: MeasuredTarget, where: str, digest: Any,
                   files: list[str]) -> tuple[MeasuredRun, ...]:
    """The runs.csv rows `target.where` selects, each with the samples its estimator reads from its log."""
    path = root / target.dataset
    rows = read_runs_csv(root, target.dataset, where, digest, files)
    columns = set(rows[0]) if rows else {"topology"}
    for col in target.where:
        if col not in columns:
            raise ReferenceError(f"{where}.where.{col}: not a column of {path} (nor topology)")
    fn = ESTIMATORS[target.estimator]
    runs = []
    for r in rows:
        if any(r.get(col) not in want for col, want in target.where.items()):
            continue
        lpath = path.parent / r["log"]
        try:
            text = lpath.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ReferenceError(f"{where}: {path.name}: {r['log']}: {exc}") from None
        digest.update(lpath.read_bytes())
        files.append(str(lpath.relative_to(root)))
        runs.append(MeasuredRun(log=str(lpath.relative_to(root)), scenario=r.get("scenario", ""),
                                policy=r.get("kernel_policy", ""), kernel_release=r.get("kernel_release", ""),
                                patch_hash=r.get("patch_hash", ""), topology=r["topology"],
                                samples_s=fn(text, target.anon_rss_max_kb)))
    if not runs:
        raise ReferenceError(f"{where}.where: no row of {path} matches {dict(target.where)}")
    return tuple(runs)


def load_reference(root: str | Path) -> Reference:
    """Read and parse a reference dataset; ReferenceError names the bad file or key."""
    from oommodel import Scenario, ScenarioError

    from sweeps.calibrate.kernel_log import KernelLogError, parse_run

    root = Path(root)
    mpath = root / "manifest.yaml"
    if not mpath.is_file():
        raise ReferenceError(f"{mpath}: no manifest (is {root} a reference dataset?)")
    try:
        man = yaml.safe_load(mpath.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReferenceError(f"{mpath}: invalid YAML: {exc}") from None
    digest = hashlib.sha256()
    files = ["manifest.yaml"]
    digest.update(mpath.read_bytes())
    plan = []
    fit_names: set[str] = set()
    for i, t in enumerate(man.get("fit") or []):
        where = f"{mpath}: fit[{i}]"
        stat = _need(t, "statistic", where)
        if stat not in STATISTICS:
            raise ReferenceError(f"{where}.statistic: unknown {stat!r} (known: {', '.join(STATISTICS)})")
        scen = tuple(_need(t, "scenarios", where))
        fit_names |= set(scen)
        lo, hi = _need(t, "bounds", where)
        plan.append(Target(key=_need(t, "key", where), statistic=stat, scenarios=scen, bounds=(float(lo), float(hi)),
                           where=dict(t.get("where") or {}), seeds=int(t.get("seeds", 0)), note=str(t.get("note", ""))))
    measured = []
    for i, t in enumerate(man.get("measure") or []):
        target = _measure_target(t, f"{mpath}: measure[{i}]")
        measured.append((target, _measured_runs(root, target, f"{mpath}: measure[{i}]", digest, files)))
    default_compare = tuple(man.get("compare") or ("lockup",))
    scenarios: dict[str, RefScenario] = {}
    for name, s in (_need(man, "scenarios", str(mpath)) or {}).items():
        where = f"{mpath}: scenarios.{name}"
        spath = root / _need(s, "scenario", where)
        try:
            raw = yaml.safe_load(spath.read_text(encoding="utf-8"))
            Scenario.from_dict(raw)
        except (OSError, yaml.YAMLError, ScenarioError) as exc:
            raise ReferenceError(f"{where}.scenario: {exc}") from None
        digest.update(spath.read_bytes())
        files.append(str(spath.relative_to(root)))
        groups = tuple(g["name"] for g in raw["groups"])
        want = _scenario_topology(raw, f"{where}.scenario")
        runs = []
        for j, r in enumerate(_need(s, "runs", where)):
            rwhere = f"{where}.runs[{j}]"
            rid = str(_need(r, "id", rwhere))
            prov = {k: v for k, v in r.items() if k not in ("summary",)}
            prov["topology"] = _boot_topology(r, want, rwhere)
            if "log" in r:
                lpath = root / r["log"]
                try:
                    text = lpath.read_text(encoding="utf-8", errors="replace")
                    kr = parse_run(text, groups)
                except (OSError, KernelLogError) as exc:
                    raise ReferenceError(f"{rwhere}.log: {exc}") from None
                seen = kr.topology
                if seen is not None and (seen.cpus, seen.llc_groups) != (want.cpus, want.llc_groups):
                    raise ReferenceError(f"{rwhere}.log: the guest showed {seen.text()}; the scenario's "
                                         f"machine.topology {want.name} has {want.llc_groups} LLC group(s)")
                digest.update(lpath.read_bytes())
                files.append(str(lpath.relative_to(root)))
                runs.append(Run(rid, dict(kr.outcome), "log", prov))
            elif "summary" in r:
                if not r.get("source"):
                    raise ReferenceError(f"{rwhere}: a summary run needs a source")
                runs.append(Run(rid, dict(r["summary"]), "summary", prov))
            else:
                raise ReferenceError(f"{rwhere}: needs a log or a summary")
        role = "fit" if name in fit_names else "check"
        scenarios[name] = RefScenario(name, raw, role, tuple(runs), tuple(s.get("compare") or default_compare),
                                      str(spath.relative_to(root)))
    for t in plan:
        for n in t.scenarios:
            if n not in scenarios:
                raise ReferenceError(f"{mpath}: fit: {t.key}: unknown scenario {n!r}")
    check_sets, checks = [], []
    for i, entry in enumerate(man.get("kernel_checks") or []):
        where = f"{mpath}: kernel_checks[{i}]"
        cs = parse_check_set(entry, where)
        if cs.name in ("fit", "check") or cs.name in (c.name for c in check_sets):
            raise ReferenceError(f"{where}.name: {cs.name!r} is taken (fit, check or another set's name)")
        check_sets.append(cs)
        checks += load_check_set(root, cs, where, digest, files)
    keys = [t.key for t in plan] + [t.key for t, _ in measured]
    for k in keys:
        if keys.count(k) > 1:
            raise ReferenceError(f"{mpath}: {k}: both measured and fitted, or twice: one source per value")
    return Reference(root, str(man.get("policy", "upstream_6_1")), tuple(plan), scenarios, digest.hexdigest()[:16],
                     tuple(files), tuple(measured), tuple(check_sets), tuple(checks))

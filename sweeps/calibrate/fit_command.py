"""`oomsweep calibrate fit`: fit a machine profile to the reference kernel runs, then check it.

    oomsweep calibrate fit [REFERENCE] [--profile qemu_tcg] [--no-write | --out FILE] [--check-only]

Reads the reference dataset (default calibration/reference; sweeps/calibrate/reference.py), estimates
the values its manifest measures straight from kernel console logs (sweeps/calibrate/measured.py),
fits the plan of its manifest with those set (sweeps/calibrate/fit.py: method and agreement rule),
prints the measured and fitted values and the agreement table (every scenario, kernel vs model at the fitted values, "fit" rows
for the statistics a value was fitted on, "check" rows for the others) on stdout as plain text, and
writes the profile (values, where each came from, the table, provenance) to
oommodel/profiles/<profile>.yaml unless --no-write. Progress goes to stderr. Exit 0 done, 2 bad input.
The flags are sweeps/cli/calibrate_fit.py; errors reach the user through sweeps.cli.commands.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from sweeps.errors import UsageError

DEFAULT_PROFILE = "qemu_tcg"


@dataclass(frozen=True)
class FitOptions:
    """What one `oomsweep calibrate fit` is asked to do (sweeps.cli.calibrate_fit builds it from the flags)."""

    reference: str | None = None  # default calibration/reference
    profile: str = DEFAULT_PROFILE
    out: str | None = None  # default oommodel/profiles/<profile>.yaml of this checkout
    no_write: bool = False
    check_only: bool = False
    seeds: int = 50
    passes: int = 2
    policy: str | None = None  # default: the manifest's


def _say(msg: str, stream: TextIO) -> None:
    print(msg, file=stream, flush=True)


def run_fit(args: FitOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Fit, check, print, write: 0 done. Bad input raises sweeps.errors.InputError (or the model's
    ScenarioError), which the command line reports as one line with exit 2 (sweeps.cli.commands)."""
    out, err = out or sys.stdout, err or sys.stderr
    from oommodel import MODEL_VERSION, POLICIES
    from oommodel.profiles import profile_names, profile_values

    from sweeps.calibrate import fit as F
    from sweeps.calibrate import measured as M
    from sweeps.calibrate.reference import DEFAULT_REFERENCE, load_reference

    if args.seeds < 1 or args.passes < 1:
        raise UsageError("--seeds/--passes: must be >= 1")
    root = Path(args.reference or DEFAULT_REFERENCE)
    ref = load_reference(root)
    policy = args.policy or ref.policy
    if policy not in POLICIES:
        raise UsageError(f"--policy: unknown policy {policy!r}")
    nruns = sum(len(s.runs) for s in ref.scenarios.values())
    nlogs = sum(r.kind == "log" for s in ref.scenarios.values() for r in s.runs)
    _say(f"reference {root} (digest {ref.digest}): {len(ref.scenarios)} scenarios, {nruns} kernel runs "
         f"({nlogs} console logs, {nruns - nlogs} summaries); model policy {policy}", err)
    t0 = time.monotonic()
    measured: list[M.MeasuredResult] = []
    if args.check_only:
        if args.profile not in profile_names():
            raise UsageError(f"--profile: no profile {args.profile!r} to check (known: {', '.join(profile_names())})")
        values = profile_values(args.profile)
        results: list[F.FitResult] = []
        _say(f"--check-only: the values of profile {args.profile}: {values}", err)
    else:
        measured = [M.estimate(t, runs) for t, runs in ref.measured]
        for m in measured:
            _say(f"measured {m.key} = {m.value} from {m.text()} (no model)", err)
        values, results = F.fit_plan(ref.plan, ref.kernel(), ref.raw_scenarios(), policy,
                                     start={m.key: m.value for m in measured},
                                     progress=lambda m: _say(m, err), passes=args.passes)
    checks = [F.CheckScenario(n, s.raw, [r.outcome for r in s.runs], s.compare) for n, s in ref.scenarios.items()]
    checks += ref.kernel_checks
    _say(f"checking {len(checks)} scenarios ({len(ref.kernel_checks)} of them kernel check rows: "
         f"{', '.join(c.name for c in ref.kernel_check_sets) or 'none'}), {args.seeds} model replicates each", err)
    table = F.check(checks, ref.plan, values, args.seeds, policy)
    elapsed = time.monotonic() - t0

    if measured:
        _say("Measured values (straight from kernel console logs, no model; set in every model run below):", out)
        _say(M.format_measured(measured), out)
        _say("", out)
    if results:
        _say(f"Fitted values ({args.profile}; reference {root}, digest {ref.digest}):", out)
        _say(F.format_fits(results), out)
        _say("", out)
    fit_set = sorted({n for t in ref.plan for n in t.scenarios})
    check_set = sorted(set(ref.scenarios) - set(fit_set))
    _say(f"Model ({policy}, {args.seeds} seeds, profile values above) vs kernel, per scenario. "
         f"Fit set (set=fit; fitted=yes: the statistic a value was fitted on): {', '.join(fit_set)}; "
         f"check set (set=check, held out of the fit): {', '.join(check_set)}.", out)
    for cs in ref.kernel_check_sets:
        _say(f"Kernel check set {cs.name} (set={cs.name}, never fitted on): the boots of {cs.dataset} "
             f"(patch hash {', '.join(cs.patch_hashes)}), one row per scenario, kernel policy, "
             f"sched_at_handover/skip_after and boot topology; the model runs each under the policy of the same name, "
             f"with that topology and hack and machine {', '.join(f'{k} {v}' for k, v in cs.machine.items())}. "
             f"Kills and handovers: before the watchdog's stall declaration (kernel), before any lockup (model).",
             out)
    _say("Rules: lockup - Fisher exact test at 5 % (Wilson 95 % intervals shown); times/counts - model median "
         "inside the kernel range widened by max(5 ms, 10 %) / max(1, 10 %); structural (oom_skip_by, kills, "
         "handed_over) - same most frequent value (a tie: any of the tied values); handovers_per_kill - the two "
         "Wilson 95 % intervals (all handovers / all kills of a side) overlap.", out)
    _say(F.format_comparisons(table), out)
    _say(agreement_counts(table), out)

    if not args.no_write and not args.check_only:
        path = Path(args.out) if args.out else _profile_path(args.profile)
        doc = profile_document(args.profile, values, results, table, ref, policy, args, elapsed, MODEL_VERSION,
                               measured)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(_HEADER + yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=True),
                       encoding="utf-8")
        tmp.replace(path)
        _say(f"wrote profile {args.profile} to {path}", err)
    return 0


AGREEMENT_GROUPS = (
    ("fitted", "fitted statistics (agree by construction unless the fit failed)"),
    ("fit-set", "other statistics of the fit-set scenarios"),
    ("held-out", "check-set scenarios (held out of the fit)"),
)


KERNEL_SET_GROUP = "boots of a patched kernel (manifest kernel_checks), each row under its own model policy"


def agreement_counts(table: Sequence[Any]) -> str:
    """One line per group of the agreement table (fit.Comparison.group): how many judged rows agree;
    a kernel check set's group ("held-out NAME") gets its own line after the three fixed ones."""
    judged = [c for c in table if c.agree is not None]
    lines = []
    fixed = {g for g, _ in AGREEMENT_GROUPS}
    extra = [(g, KERNEL_SET_GROUP) for g in dict.fromkeys(c.group for c in table) if g not in fixed]
    for group, what in (*AGREEMENT_GROUPS, *extra):
        rows = [c for c in judged if c.group == group]
        lines.append(f"{group}: {sum(c.agree for c in rows)}/{len(rows)} agree - {what}")
    return "\n".join(lines)


_HEADER = ("# Written by `oomsweep calibrate fit` (sweeps/calibrate/fit_command.py): refit rather than edit.\n"
           "# `values` are what `machine.profile` fills in; `sources` say which kernel runs each came from;\n"
           "# `check` is the agreement table at these values. docs/calibration.md explains the method.\n"
           "# These values replace the model's defaults (the bare_metal profile, oommodel/scenario.py) in scenarios\n"
           "# with this machine.profile; each source's `note` says how the value relates to that default.\n")


def _profile_path(name: str) -> Path:
    import oommodel.profiles

    return Path(oommodel.profiles.__file__).parent / f"{name}.yaml"


def measured_source(m: Any) -> dict[str, Any]:
    """The `sources` entry of a value measured from console logs (sweeps/calibrate/measured.py)."""
    from sweeps.calibrate.fit import round_sig

    def uniq(attr: str) -> list[str]:
        return sorted({getattr(r, attr) for r in m.runs} - {""})

    return {
        "statistic": m.statistic,
        "scenarios": uniq("scenario"),
        "kernel": ", ".join(f"{rel} (patch hash {ph})" for rel, ph in
                            sorted({(r.kernel_release, r.patch_hash) for r in m.runs})),
        "measured": m.text(),
        "n": m.n,
        "median_ms": round_sig(m.median_s * 1e3),
        "p10_ms": round_sig(m.p10_s * 1e3),
        "p90_ms": round_sig(m.p90_s * 1e3),
        "zero_delays": m.zeros,
        "interval": {k: [round_sig(lo), round_sig(hi)] for k, (lo, hi) in m.interval.items()},
        "mle_of_positive_logs": [round_sig(m.mle[0]), round_sig(m.mle[1])],
        "policies": uniq("policy"),
        "runs": [r.log for r in m.runs],
        "boot_topology": uniq("topology"),
        "method": m.method,
        "note": m.note,
    }


def profile_document(name: str, values: dict[str, Any], results: Sequence[Any], table: Sequence[Any], ref: Any,
                     policy: str, args: FitOptions, elapsed: float, model_version: str,
                     measured: Sequence[Any] = ()) -> dict[str, Any]:
    from sweeps.calibrate.fit import round_sig

    from sweeps.storage.provenance import git_sha
    accels = sorted({str(r.provenance.get("accelerator", "")) for s in ref.scenarios.values() for r in s.runs})
    kernels = sorted({str(r.provenance.get("kernel", "")) for s in ref.scenarios.values() for r in s.runs})
    notes = {t.key: t.note for t in ref.plan if t.note}
    boots = {r.id: r.provenance.get("topology", "") for s in ref.scenarios.values() for r in s.runs}
    kernels += sorted({r.kernel_release for m in measured for r in m.runs} - set(kernels))
    sources = {m.key: measured_source(m) for m in measured}
    for r in results:
        sources[r.key] = {
            "statistic": r.statistic,
            "scenarios": list(r.scenarios),
            "kernel": r.kernel,
            "model_at_value": r.model_at_fit,
            "interval": [round_sig(r.interval[0]), round_sig(r.interval[1])],
            "interval_text": r.interval_text(),
            "at_bound": r.at_bound,
            "runs": list(r.runs),
            "boot_topology": sorted({boots.get(i, "") for i in r.runs} - {""}),  # QEMU -smp of those runs
            "method": r.method,
        }
        if r.key in notes:
            sources[r.key]["note"] = notes[r.key]  # the manifest's word on this value vs the bare_metal default
    return {
        "name": name,
        "description": f"costs measured on QEMU {'/'.join(a.upper() for a in accels if a)} boots of "
                       f"{', '.join(k for k in kernels if k)} (calibration/reference)",
        "values": {k: values[k] for k in values},
        "sources": sources,
        "check": [{"set": c.scenario_set, "fitted": c.role == "fit", "scenario": c.scenario,
                   "statistic": c.statistic, "kernel": c.kernel,
                   "model": c.model, "rule": c.rule, "agree": c.agree} for c in table],
        "provenance": {
            "command": "oomsweep calibrate fit " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["calibrate", "fit"]
                                                          else []),
            "reference": str(ref.root),
            "reference_digest": ref.digest,
            "reference_files": len(ref.files),
            "policy": policy,
            "passes": args.passes,
            "check_seeds": args.seeds,
            "model_version": model_version,
            "git_sha": git_sha(),
            "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": round(elapsed, 1),
        },
    }

"""`oomsweep calibrate`: run a scenario on a real 6.1 kernel under QEMU, beside the model's prediction.

Why it is built this way:
- The model is only worth what it predicts about the thing it models, so the kernel side runs the
  *same scenario file*: `translate()` turns it into reproducer parameters (infra/qemu/src/oomrepro.c)
  and refuses, naming the key path, every feature a stock kernel cannot run. Keys that are the
  model's own parameters (costs, `balance_interval_ms`, `ksoftirqd_awake_p`, page-table ratio) are
  not translated: on the kernel they are whatever the kernel does, which is what is measured.
- Kernel and model rows go into one sweep of the Parquet dataset with the model's columns plus
  `source` ("kernel" | "model"), `accelerator` ("tcg" | "kvm" | "" for model rows) and
  `kernel_release`; boots of a stock image sit under the policy partition "kernel", boots of a
  kernel built by infra/kernels/build.sh under "<kernel>:<its policy>" (kernel_label), model rows
  under the policy label, so boots of two kernel policies are never pooled, `oomsweep report`
  shows them side by side and MLflow logs them as sibling child runs of one parent
  (sweeps.tracking.mlflow_log.log_sweep).
- TCG stretches CPU-bound work against fixed timers (10-20x here): compare structure (who is
  the victim, who sets MMF_OOM_SKIP, which fixed delays) before rates; the accelerator is on
  every row.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sweeps.calibrate import kernels
from sweeps.calibrate.text_table import plain_table
from sweeps.calibrate.translate import DEBIAN_6_1, KernelFacts, ReproPlan, kernel_facts, match_kernel, translate
from sweeps.errors import EXIT_BAD_INPUT, InputError, UsageError, one_line
from sweeps.spec.model import PolicyChoice
from sweeps.spec.oommodel_api import model_input_errors

KERNEL_POLICY = "kernel"
SOURCE_KERNEL, SOURCE_MODEL = "kernel", "model"
DEFAULT_OUTPUT = "calibration"
DEFAULT_SKIP_AFTER = "pgtables"


def kernel_label(kernel: str, kernel_policy: str, skip_after: str = DEFAULT_SKIP_AFTER) -> str:
    """The policy label of a built kernel's boots: "5.10-oomsweep:handoff_rfc_v2", with
    "[skip_after=close]" when the RFC v2 flag placement is not the default, so a sweep that boots
    one scenario under several kernel policies keeps them apart (table, MLflow, replicate numbers)."""
    label = f"{kernel}:{kernel_policy}"
    return label + (f"[skip_after={skip_after}]" if skip_after != DEFAULT_SKIP_AFTER else "")


def row_policy_label(source: str, policy: str, options_json: str | None) -> str:
    """What the table calls a row's policy: its partition label, except the kernel rows of a built
    kernel stored under the plain "kernel" partition (before kernel_label), which are labelled from
    the kernel and policy their options record, so old boots of different policies are not pooled."""
    if source != SOURCE_KERNEL or policy != KERNEL_POLICY or not options_json:
        return policy
    opts = json.loads(options_json)
    if not opts.get("kernel_policy"):
        return policy  # a stock image: the kernel's own policy
    return kernel_label(opts["kernel"], opts["kernel_policy"], opts.get("skip_after", DEFAULT_SKIP_AFTER))

# --------------------------------------------------------------------------------------------------
# Rows


# Per kernel row, the CPU topology of the boot (sweeps.storage.schema.CALIBRATION_FIELDS): null in model
# rows and in rows of boots before they existed (those ran plain `-smp N`: QEMU 7.2's one socket
# sharing the L3, i.e. shared_llc).
TOPOLOGY_FIELDS = ("qemu_smp", "qemu_command", "guest_topology", "guest_llc_groups")


def row_schema(scenario: Mapping[str, Any]):
    """The sweep file schema (sweeps.storage.schema.file_schema, no grid columns) plus the calibration
    columns: source/accelerator/kernel_release and the boot's topology."""
    from sweeps.storage import schema as S

    base = S.file_schema({}, S.cpu_keys_for(scenario))
    for field in S.CALIBRATION_FIELDS:
        base = base.append(field)
    return base


def scenario_topology(scenario: Mapping[str, Any]) -> str:
    """The machine.topology of a canonical scenario as one word ("shared_llc", "2x4")."""
    from sweeps.calibrate.translate import guest_topology

    try:
        return guest_topology(scenario["machine"]).name
    except InputError:  # a topology QEMU cannot present: still name it
        return json.dumps(scenario["machine"].get("topology"), sort_keys=True)


def boot_topology_label(smp: Any) -> str:
    """The topology a kernel row was booted with, in machine.topology's words."""
    from sweeps.calibrate.translate import GuestTopology

    if not isinstance(smp, str) or not smp:
        return "shared_llc (plain -smp)"
    return GuestTopology.from_smp(smp).name


@dataclass(frozen=True)
class Calibration:
    """One `oomsweep calibrate` invocation's identity."""

    sweep: str
    cell_id: str
    scenario_json: str
    model_version: str
    execution_id: str
    seed: int


def _row(cal: Calibration, *, policy_name: str, options: Mapping[str, Any], replicate: int, seed: int,
         outcome: Mapping[str, Any] | None, status: str, error: str, wall_s: float, source: str,
         accelerator: str, release: str, topology: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import os
    import socket

    from sweeps.run.rows import identity_columns
    from sweeps.storage.schema import outcome_columns

    row = identity_columns(policy_name=policy_name, policy_options=options, cell_id=cal.cell_id, cell_index=0,
                           replicate=replicate, seed=seed, execution_id=cal.execution_id,
                           model_version=cal.model_version, scenario_json=cal.scenario_json)
    row.update({
        "status": status,
        "error": error,
        "wall_s": wall_s,
        "node_id": socket.gethostname(),
        "worker_pid": os.getpid(),
        "source": source,
        "accelerator": accelerator,
        "kernel_release": release,
    })
    row.update({name: (topology or {}).get(name) for name in TOPOLOGY_FIELDS})
    if outcome is not None:
        row.update(outcome_columns(outcome))
    return row


def _next_replicate(output: Path, sweep: str, policy: str, cell: str) -> int:
    """Kernel runs are new samples each time: number them after the stored ones of this scenario."""
    from sweeps.storage import dataset

    keys = dataset.done_keys(output, sweep)
    reps = [r for c, p, r in keys if p == policy and c == cell]
    return max(reps) + 1 if reps else 0


# --------------------------------------------------------------------------------------------------
# The summary table


def summary_table(df) -> list[dict[str, Any]]:
    """One line per (source, policy, accelerator, topology): the shared per-policy summary
    (sweeps.analysis.summary: n, lockups, lockup_probability with its Wilson 95 % interval, stall
    median, mean kills, failed_rows) plus the real kernel's extras (max stall, first kill,
    MMF_OOM_SKIP setters, exits pending) and the handovers: runs that handed over, and handovers
    per kill with its Wilson 95 % interval (None for a stock kernel, which has no instrument)."""
    from sweeps.analysis.stats import quantile
    from sweeps.analysis.summary import summarise

    out = []
    opts = df["policy_options"] if "policy_options" in df.columns else [None] * len(df)
    df = df.assign(topology=_row_topologies(df),
                   policy=[row_policy_label(s, str(p), o) for s, p, o in zip(df["source"], df["policy"], opts)])
    keys = ["source", "policy", "accelerator", "topology"]
    for key, g in df.groupby(keys, sort=True, dropna=False):
        line = {**dict(zip(keys, key)), **summarise(g)}
        if line["n"] == 0:
            continue
        ok = g[g["status"] == "ok"] if "status" in g.columns else g
        stall = [float(x) for x in ok["max_stall_s"]]
        kills = ok["first_kill_s"].astype(float)
        line.update({
            "max_stall_s": max(stall, default=math.nan),
            "median_first_kill_s": quantile(list(kills.dropna()), 0.5),
            "oom_skip_by": ",".join(f"{k}:{v}" for k, v in ok["oom_skip_by"].value_counts().sort_index().items()),
            # killed tasks that freed their memory but had not exited (real-kernel-6.1.md section 4)
            "max_exits_pending": _max_or_nan(ok, "exits_pending_max"),
            "max_exit_delay_s": _max_or_nan(ok, "exit_delay_max_s"),
            "not_ok": line["failed_rows"],
            **_handover_counts(ok, instrumented=key[0] != SOURCE_KERNEL or key[1] != KERNEL_POLICY),
        })
        out.append(line)
    return out


def _handover_counts(ok, *, instrumented: bool) -> dict[str, Any]:
    """Runs that handed over, handovers and kills: the model counts them, a built kernel prints
    "Handed over N to exit path." (sweeps.calibrate.kernels), a stock kernel cannot tell (None)."""
    if not instrumented or "handovers" not in ok.columns:
        return {"runs_handed_over": None, "handovers": None, "handover_kills": None}
    return {"runs_handed_over": int(ok["handed_over"].astype(bool).sum()),
            "handovers": int(ok["handovers"].fillna(0).sum()),
            "handover_kills": int(ok["kills"].fillna(0).sum())}


def _row_topologies(df) -> list[str]:
    """Per row, the CPU topology it ran on: a model row its scenario's machine.topology, a kernel row
    the -smp it was booted with (plain -smp before the column existed, i.e. shared_llc), so kernel rows
    of different topologies are never pooled and each line says which topology it is."""
    out = []
    smp = df["qemu_smp"] if "qemu_smp" in df.columns else [None] * len(df)
    scen = df["scenario_json"] if "scenario_json" in df.columns else [None] * len(df)
    for src, sj, q in zip(df["source"], scen, smp):
        if src == SOURCE_KERNEL:
            out.append(boot_topology_label(q))
        else:
            out.append(scenario_topology(json.loads(sj)) if sj else "-")
    return out


def topology_mismatch(lines: Sequence[Mapping[str, Any]]) -> str:
    """A warning when kernel and model lines of one table ran on different topologies, else ""."""
    kernel = {ln["topology"].split(" ")[0] for ln in lines if ln["source"] == SOURCE_KERNEL}
    model = {ln["topology"].split(" ")[0] for ln in lines if ln["source"] == SOURCE_MODEL}
    other = sorted(kernel - model)
    if not other or not model:
        return ""
    return (f"note: kernel rows booted as {', '.join(other)} are not comparable with model rows of "
            f"{', '.join(sorted(model))} (machine.topology); rerun the boots or set the scenario's topology")


def _max_or_nan(g, column: str) -> float:
    """Largest value of a column over the runs (nan if absent or all null: rows of an older model)."""
    if column not in g:
        return math.nan
    values = g[column].astype(float).dropna()
    return float(values.max()) if len(values) else math.nan


def format_summary(lines: Sequence[Mapping[str, Any]]) -> str:
    head = ["source", "policy", "accel", "topology", "n", "lockups", "P(lockup) [95% CI]", "median stall", "max stall",
            "kills", "first kill", "MMF_OOM_SKIP by", "handed over", "handovers/kill [95% CI]", "exits pending",
            "exit delay", "not ok"]
    rows = [head]
    for ln in lines:
        rows.append([
            ln["source"], ln["policy"], ln["accelerator"] or "-", ln.get("topology") or "-", str(ln["n"]), str(ln["lockups"]),
            f"{ln['lockup_probability']:.3f} [{ln['ci_low']:.3f}, {ln['ci_high']:.3f}]", f"{ln['median_stall_s']:.3f} s",
            f"{ln['max_stall_s']:.3f} s", f"{ln['mean_kills']:.1f}", f"{ln['median_first_kill_s']:.3f} s",
            ln["oom_skip_by"], *_fmt_handovers(ln), _fmt_max(ln.get("max_exits_pending"), "{:.0f}"),
            _fmt_max(ln.get("max_exit_delay_s"), "{:.3f} s"), str(ln["not_ok"]),
        ])
    return plain_table(rows)


def _fmt_handovers(ln: Mapping[str, Any]) -> tuple[str, str]:
    """("runs/n", "handovers/kills = rate [low, high]"), or ("-", "-") where nothing counts them."""
    from sweeps.analysis.stats import wilson

    if ln.get("handovers") is None:
        return "-", "-"
    runs = f"{ln['runs_handed_over']}/{ln['n']}"
    if not ln["handover_kills"]:
        return runs, f"{ln['handovers']}/0"
    ci = wilson(min(ln["handovers"], ln["handover_kills"]), ln["handover_kills"])
    return runs, (f"{ln['handovers']}/{ln['handover_kills']} = {ln['handovers'] / ln['handover_kills']:.3f} "
                  f"[{ci.low:.3f}, {ci.high:.3f}]")


def _fmt_max(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)


# --------------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class CalibrateOptions:
    """What one `oomsweep calibrate` is asked to do (sweeps.cli.calibrate builds it from the flags)."""

    scenario: str
    runs: int = 1  # kernel boots
    seeds: int = 20  # model replicates
    policy: str | None = None  # model policy; None: resolve_model_policy() picks the kernel's
    output: str = DEFAULT_OUTPUT
    sweep: str | None = None  # default calibrate-<scenario file stem>
    seed: int = 0
    match_kernel: bool = False
    accel: str = "auto"  # "auto" | "kvm" | "tcg"
    kernel: str | None = None  # an image path, or the name of a kernel built by infra/kernels/build.sh
    kernel_policy: str | None = None  # a built kernel's oomsweep.policy= (default: policy)
    skip_after: str = DEFAULT_SKIP_AFTER  # handoff_rfc_v2 on a built kernel: "pgtables" | "close"
    profile: str | None = None  # machine profile of the model side (model_profile decides when None)
    boot_timeout: float | None = None  # default 60 + 2 x horizon_s
    logs: str | None = None  # default OUTPUT/calibrate-logs/<sweep>
    mlflow_uri: str | None = None
    no_mlflow: bool = False


@dataclass(frozen=True)
class _Prepared:
    """The checked scenario and what was decided before the sweep lock is taken."""

    path: Path
    scenario: dict[str, Any]
    facts: KernelFacts
    kernel: Path | None  # None: no boots
    accel: str  # the QEMU accelerator of the boots ("" without boots)
    plan: ReproPlan
    output: Path
    sweep: str
    options: dict[str, Any]  # the model policy's options
    model_label: str  # the model rows' policy label: the policy, with the options given ([skip_after=close])
    kspec: Any = None  # kernels.KernelSpec of a kernel built by infra/kernels/build.sh, else None
    kernel_policy: str | None = None  # the oomsweep.policy= that kernel boots with


def _sweep_name(path: Path) -> str:
    stem = path.stem.removeprefix("calibrate-")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"calibrate-{stem}")
    return name[:100]


def _say(msg: str, stream: TextIO) -> None:
    print(msg, file=stream, flush=True)


def run_calibrate(args: CalibrateOptions, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The `calibrate` subcommand: 0 ok, 1 some boot failed, 2 bad input or refused scenario."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        with _sigterm_interrupts():
            return _calibrate(args, out, err)
    except InputError as exc:  # a refused scenario, a bad flag, a held lock, the QEMU harness missing
        _say(f"oomsweep calibrate: {exc.label}: {one_line(exc)}", err)
        return exc.exit_code
    except model_input_errors() as exc:  # the scenario file or the policy's options
        _say(f"oomsweep calibrate: error: {one_line(exc)}", err)
        return EXIT_BAD_INPUT


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so a running QEMU is killed (sweeps.calibrate.qemu) and no guest outlives us."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The scenario file as written (a machine profile fills only the keys it does not set)."""
    import yaml

    from oommodel import ScenarioError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError("", f"{path}: invalid YAML: {exc}") from None
    return data if data is not None else {}


def model_profile(requested: str | None, accelerator: str, scenario: Mapping[str, Any]) -> tuple[str | None, str]:
    """The machine profile of the model side (None: the scenario's own) and a line that says why.

    --profile wins; else a scenario's own `machine.profile`; else the profile of the boot's
    accelerator: `qemu_kvm` for KVM when one was measured (else `bare_metal`, said so), `qemu_tcg`
    for TCG and for model-only runs (the reference boots are TCG).
    """
    from oommodel.profiles import profile_names

    known = profile_names()
    if requested:
        if requested not in known:
            import difflib

            m = difflib.get_close_matches(requested, known, n=1)
            raise UsageError(f"--profile: unknown machine profile {requested!r}"
                             + (f" (did you mean '{m[0]}'?)" if m else f"; known: {', '.join(known)}"))
        return requested, f"model side: machine profile {requested} (--profile)"
    machine = scenario.get("machine") if isinstance(scenario, Mapping) else None
    if isinstance(machine, Mapping) and machine.get("profile") is not None:
        return None, f"model side: machine profile {machine['profile']} (the scenario's)"
    if accelerator == "kvm":
        if "qemu_kvm" in known:
            return "qemu_kvm", "model side: machine profile qemu_kvm (the boot uses KVM)"
        return "bare_metal", ("model side: machine profile bare_metal: the boot uses KVM and no qemu_kvm profile "
                              "has been measured (docs/calibration.md)")
    return "qemu_tcg", "model side: machine profile qemu_tcg (costs measured on TCG boots; --profile to change)"


DEFAULT_MODEL_POLICY = "upstream_6_1"  # the stock Debian 6.1 image of infra/qemu


def resolve_model_policy(policy: str | None, kernel_policy: str | None, kernel: str | None) -> str:
    """The model policy to put beside the boots: --policy if given, else the policy the kernel boots.

    That is --kernel-policy, else a built kernel's default policy (`5.10-oomsweep`: `upstream_5_10`),
    when the model has a policy of that name; else `upstream_6_1`, the stock 6.1 image's.
    """
    from oommodel import POLICIES

    if policy:
        return policy
    candidates = [kernel_policy]
    if kernels.is_name(kernel):
        candidates.append(kernels.load(str(kernel)).default_policy)
    for name in candidates:
        if name and name in POLICIES:
            return name
    return DEFAULT_MODEL_POLICY


def _calibrate(args: CalibrateOptions, out: TextIO, err: TextIO) -> int:
    from oommodel import POLICIES, Scenario

    from sweeps.calibrate import qemu
    from sweeps.storage import dataset
    from sweeps.storage.lock import SweepLock

    if args.runs < 0 or args.seeds < 0:
        raise UsageError("--runs/--seeds: must be >= 0")
    args = dataclasses.replace(args, policy=resolve_model_policy(args.policy, args.kernel_policy, args.kernel))
    path = Path(args.scenario)
    raw = _read_yaml(path)
    scenario = Scenario.from_dict(raw).to_dict()
    if args.policy not in POLICIES:
        import difflib

        m = difflib.get_close_matches(args.policy, list(POLICIES), n=1)
        raise UsageError(f"--policy: unknown policy {args.policy!r}" + (f" (did you mean '{m[0]}'?)" if m else ""))
    # --skip-after places RFC v2's MMF_OOM_SKIP on both sides: the model policy takes it as an option
    given = ({"skip_after": args.skip_after}
             if args.skip_after != DEFAULT_SKIP_AFTER and "skip_after" in POLICIES[args.policy].check_options({})
             else {})
    options = POLICIES[args.policy].check_options(given)
    model_label = PolicyChoice(args.policy, tuple(given.items())).label

    kernel, missing, kspec = None, None, None
    if kernels.is_name(args.kernel):
        # a kernel built by infra/kernels/build.sh: its manifest fixes HZ, preemption and the policies
        kspec = kernels.load(args.kernel)
        kernel = kspec.image
        facts = KernelFacts(kspec.release, kspec.hz)
        if args.match_kernel:
            scenario, changes = kernels.match_scenario(scenario, kspec)
            for ch in changes:
                _say(f"--match-kernel: {ch}", err)
            scenario = Scenario.from_dict(scenario).to_dict()
        # refuses (a policy the kernel lacks, a preemption model it was not built with) before booting
        plan, _, kpolicy, _ = kernels.boot_plan(scenario, kspec, args.kernel_policy or args.policy,
                                                skip_after=args.skip_after, seed=args.seed)
        kernel_policy = kpolicy
    else:
        kernel_policy = None
        if args.kernel_policy or args.skip_after != DEFAULT_SKIP_AFTER:
            raise UsageError("--kernel-policy/--skip-after: need a kernel built by infra/kernels/build.sh "
                             f"(--kernel NAME; defined: {', '.join(kernels.defined())})")
        try:
            kernel = qemu.find_kernel(args.kernel)
        except qemu.QemuError as exc:
            missing = exc  # refusals do not need the kernel: translate against Debian's 6.1 facts first
        facts = kernel_facts(kernel) if kernel else DEBIAN_6_1
        if args.match_kernel:
            scenario, changes = match_kernel(scenario, facts)
            for ch in changes:
                _say(f"--match-kernel: {ch}", err)
            scenario = Scenario.from_dict(scenario).to_dict()
        plan = translate(scenario, facts, args.seed)  # refuses before anything runs
    if args.runs and missing is not None:
        raise missing
    if not args.runs:
        kernel = None
    accel = qemu.choose_accelerator(kernel, args.accel) if kernel else ""
    # The model side's costs: a machine profile measured on boots like these (docs/calibration.md).
    # Costs are not translated, so the plan above stands; only the model's scenario changes.
    profile, why = model_profile(args.profile, accel, raw)
    _say(why, err)
    if profile is not None:
        raw = json.loads(json.dumps(raw))
        machine = raw.setdefault("machine", {})
        machine["profile"] = profile
        if args.match_kernel:
            machine["hz"], machine["softirq"] = scenario["machine"]["hz"], scenario["machine"]["softirq"]
        scenario = Scenario.from_dict(raw).to_dict()

    output = Path(args.output)
    sweep = args.sweep or _sweep_name(path)
    # One writer per sweep (kernel replicate numbers are taken from what is stored).
    with SweepLock(output, sweep):
        dataset.clean_stale_tmp(output, sweep)
        return _calibrate_locked(args, _Prepared(path, scenario, facts, kernel, accel, plan, output, sweep, options,
                                                          model_label, kspec, kernel_policy), out, err)


def _calibrate_locked(args: CalibrateOptions, prep: _Prepared, out: TextIO, err: TextIO) -> int:
    """Under the sweep lock: model rows, then kernel boots, then the table and MLflow."""
    from oommodel import MODEL_VERSION

    from sweeps.spec.identity import canonical_json, cell_id
    from sweeps.storage import dataset
    from sweeps.storage.provenance import provenance

    dataset.check_sweep_seed(prep.output, prep.sweep, args.seed)
    dataset.check_sweep_schema(prep.output, prep.sweep)
    cal = Calibration(prep.sweep, cell_id(prep.scenario, MODEL_VERSION), canonical_json(prep.scenario), MODEL_VERSION,
                      f"cal-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", args.seed)
    prov = provenance(sweep=prep.sweep, sweep_hash=cal.cell_id, seed=args.seed, model_version=MODEL_VERSION,
                      execution_id=cal.execution_id, sweep_file=None, scenario_file=str(prep.path),
                      kernel=prep.facts.release, accelerator=prep.accel, command="calibrate")
    writer = dataset.DatasetWriter(prep.output, prep.sweep, row_schema(prep.scenario), prov, flush_seconds=1e9)
    _say(f"calibrate {prep.path} -> {prep.output}/sweep={prep.sweep} (execution {cal.execution_id}); kernel "
         f"{prep.facts.release}, accelerator {prep.accel or '-'}, {args.runs} boot(s), {args.seeds} model replicate(s) "
         f"of {args.policy}", err)
    failures = _simulate_model(args, prep, cal, writer, err)
    if args.runs:
        failures += _boot_kernel(args, prep, cal, prep.accel, writer, err)
    writer.close()
    _summarise(args, prep, cal, out, err)
    return 1 if failures else 0


def _simulate_model(args: CalibrateOptions, prep: _Prepared, cal: Calibration, writer: Any, err: TextIO) -> int:
    """Model rows: the replicates not stored yet (same seeds give the same rows); returns the failures."""
    from oommodel import Scenario, simulate

    from sweeps.spec.identity import replicate_seed
    from sweeps.storage import dataset

    done = {r for c, p, r in dataset.done_keys(prep.output, prep.sweep) if p == prep.model_label and c == cal.cell_id}
    sc = Scenario.from_dict(prep.scenario)
    model_rows = []
    failures = 0
    for rep in range(args.seeds):
        if rep in done:
            continue
        seed = replicate_seed(args.seed, cal.cell_id, rep)
        t = time.perf_counter()
        try:
            outcome, status, error = _outcome_dict(simulate(sc, args.policy, seed=seed)), "ok", ""
        except Exception as exc:  # a model bug is a row with its seed, not a lost calibration
            outcome, status, error = None, "error", f"{type(exc).__name__}: {exc}"
            failures += 1
        model_rows.append(_row(cal, policy_name=args.policy, options=prep.options, replicate=rep, seed=seed,
                               outcome=outcome, status=status, error=error, wall_s=time.perf_counter() - t,
                               source=SOURCE_MODEL, accelerator="", release=""))
    if model_rows:
        writer.add(prep.model_label, model_rows)
        writer.flush()
        _say(f"model: {len(model_rows)} replicate(s) simulated ({args.seeds - len(model_rows)} already stored)", err)
    return failures


def _boot_kernel(args: CalibrateOptions, prep: _Prepared, cal: Calibration, accel: str, writer: Any,
                 err: TextIO) -> int:
    """Kernel rows: --runs boots under QEMU, each a new replicate after the stored ones; returns the failures."""
    from sweeps.calibrate import qemu

    base = qemu.base_initramfs()
    logs = Path(args.logs) if args.logs else prep.output / "calibrate-logs" / prep.sweep
    logs.mkdir(parents=True, exist_ok=True)
    limit = args.boot_timeout or 60.0 + 2.0 * prep.plan.horizon_s
    label = (KERNEL_POLICY if prep.kspec is None
             else kernel_label(prep.kspec.name, prep.kernel_policy, args.skip_after))
    first = _next_replicate(prep.output, prep.sweep, label, cal.cell_id)
    failures = 0
    for i in range(args.runs):
        rep = first + i
        if prep.kspec is None:
            run_plan = translate(prep.scenario, prep.facts, args.seed + rep)  # run r draws its start offsets from seed + r
            cmdline = run_plan.cmdline()
        else:
            run_plan, cmdline, _, _ = kernels.boot_plan(prep.scenario, prep.kspec, prep.kernel_policy,
                                                        skip_after=args.skip_after, seed=args.seed + rep)
        conf = run_plan.conf_text(rep)
        b = qemu.boot(prep.kernel, base, {"oomrepro.conf": conf.encode()}, cpus=run_plan.cpus, smp=run_plan.smp,
                      cmdline=cmdline, accelerator=accel, limit_s=limit)
        log = logs / f"{cal.execution_id}-run{rep}.log"
        log.write_text(b.console)
        _refuse_failed_boot(b, prep.facts.release, log)
        cols = (kernels.kernel_columns(b.console, prep.kspec, prep.kernel_policy,
                                       prep.scenario["victim"]["sched_at_handover"], args.skip_after)
                if prep.kspec is not None else None)
        outcome, status, error, note = _read_boot(b, prep.plan, limit,
                                                  preempt_built=prep.kspec.preempt if prep.kspec else "",
                                                  skip_by=cols["skip_by_first"] if cols else "none")
        topology, status, error, note = _boot_topology(b, run_plan, status, error, note)
        kopts: dict[str, Any] = {"release": prep.facts.release, "accelerator": accel}
        if cols is not None:
            status, error, note = _patched_kernel_row(cols, prep, args.skip_after, outcome, kopts,
                                                     status, error, note)
        failures += status != "ok"
        writer.add(label, [_row(cal, policy_name=KERNEL_POLICY,
                                        options=kopts,
                                        replicate=rep, seed=args.seed + rep, outcome=outcome, status=status,
                                        error=error, wall_s=b.wall_s, source=SOURCE_KERNEL,
                                        accelerator=accel, release=prep.facts.release, topology=topology)])
        writer.flush()
        share = f", host share {b.host_share:.2f}" if b.host_share is not None else ""
        _say(f"boot {i + 1}/{args.runs} [{accel}] {b.wall_s:.1f} s{share} {status}: {note} (log {log})", err)
    return failures


def _refuse_failed_boot(b: Any, release: str, log: Path) -> None:
    """A boot that never started the reproducer is an error naming the step and the log, never a row."""
    from sweeps.calibrate.kernel_log import boot_failure
    from sweeps.errors import KernelBootFailed

    if why := boot_failure(b.console, b.timed_out):
        raise KernelBootFailed(f"kernel {release}: {why}; log {log}")


def _boot_topology(b: Any, plan: ReproPlan, status: str, error: str,
                   note: str) -> tuple[dict[str, Any], str, str, str]:
    """The row's topology columns; a guest that shows another LLC grouping than machine.topology asked
    for makes the row an error (its outcome is not about the scenario's machine)."""
    import shlex

    from sweeps.calibrate.kernel_log import guest_topology

    seen = guest_topology(b.console)
    cols = {"qemu_smp": plan.smp, "qemu_command": " ".join(shlex.quote(c) for c in b.command),
            "guest_topology": seen.text() if seen else None, "guest_llc_groups": seen.llc_groups if seen else None}
    want = plan.topology
    if seen is None:
        note += f"; -smp {plan.smp}, guest topology not printed"
    else:
        note += f"; -smp {plan.smp}: guest {seen.text()}"
        if want is not None and (seen.cpus, seen.llc_groups) != (want.cpus, want.llc_groups) and status == "ok":
            status, error = "error", (f"machine.topology: {want.name} asks for {want.llc_groups} LLC group(s) of "
                                      f"{want.cpus} CPUs, the guest shows {seen.text()}")
    return cols, status, error, note


def _read_boot(b: Any, plan: ReproPlan, limit: float, preempt_built: str = "",
               skip_by: str = "none") -> tuple[dict[str, Any] | None, str, str, str]:
    """(outcome, status, error, one-line note) of one boot's console log. From a built kernel:
    `preempt_built`, its CONFIG_PREEMPT* model, shown when the log does not say (no PREEMPT_DYNAMIC
    line), and `skip_by`, who set MMF_OOM_SKIP on the first victim by its own printk, which wins
    over the log heuristic ("none": no such printk)."""
    from sweeps.calibrate.kernel_log import parse_run
    from sweeps.errors import KernelLogError

    outcome, status, error = None, "ok", ""
    try:
        run = parse_run(b.console, plan.groups)
        outcome = run.outcome
        if skip_by != "none":
            outcome["oom_skip_by"] = outcome["released_by"] = skip_by
        if run.errors:
            status, error = "error", "; ".join(run.errors)
        elif run.settings_failed:
            status, error = "error", "kernel settings failed: " + ", ".join(run.settings_failed)
        elif b.timed_out and not run.end_reason:
            status, error = "timeout", f"boot exceeded {limit:.0f} s"
        skip = ("" if outcome["first_skip_s"] is None
                else f" {outcome['first_skip_s'] - outcome['first_kill_s']:.3f} s after the kill")
        note = (f"kills {outcome['kills']}, lockup {'YES' if outcome['lockup'] else 'no'}, "
                f"max stall {outcome['max_stall_s']:.2f} s, first victim's MMF_OOM_SKIP by "
                f"{outcome['oom_skip_by']}{skip}, reaps {len(run.kill_to_reap_s)}, "
                f"oom events {outcome['oom_calls']}, exits pending max {outcome['exits_pending_max']} "
                f"(wait max {outcome['exit_delay_max_s']:.2f} s, longest without an exit "
                f"{run.exit_gap_max_s:.2f} s, preempt="
                f"{run.preempt or (f'{preempt_built} (built)' if preempt_built else '?')})")
    except KernelLogError as exc:
        status = "timeout" if b.timed_out else "error"
        error = str(exc) + (f" (boot exceeded {limit:.0f} s)" if b.timed_out else "")
        note = error
    return outcome, status, error, note


def _summarise(args: CalibrateOptions, prep: _Prepared, cal: Calibration, out: TextIO, err: TextIO) -> None:
    """The table of this scenario's stored rows, and the MLflow runs (unless --no-mlflow)."""
    from sweeps.storage import dataset

    df = dataset.read_sweep(prep.output, prep.sweep)
    df = df[df["cell_id"] == cal.cell_id]
    if df.empty:
        return
    _say(f"sweep {prep.sweep}, scenario {prep.path.name} (cell {cal.cell_id}):", out)
    lines = summary_table(df)
    _say(format_summary(lines), out)
    if note := topology_mismatch(lines):
        _say(note, out)
    if not args.no_mlflow:
        _log_mlflow(prep.output, prep.sweep, cal, args.mlflow_uri, err)


def _patched_kernel_row(cols: Mapping[str, Any], prep: _Prepared, skip_after: str, outcome: dict[str, Any] | None,
                        kopts: dict[str, Any], status: str, error: str, note: str) -> tuple[str, str, str]:
    """A built kernel's row: its instruments' handovers (kernels.kernel_columns), its policy and patch set."""
    kspec, kernel_policy = prep.kspec, prep.kernel_policy
    kopts.update({"kernel": kspec.name, "kernel_policy": kernel_policy, "skip_after": skip_after,
                  "sched_at_handover": cols["sched_at_handover"], "patch_hash": kspec.patch_hash,
                  "build_hash": kspec.build_hash[:12]})
    if outcome is not None:
        outcome["handovers"] = cols["handovers"]  # "Handed over N to exit path." lines
        outcome["handed_over"] = cols["handed_over"]
    if cols["instrument_errors"] and status == "ok":
        status, error = "error", cols["instrument_errors"]
    note += (f"; {kspec.name} policy {kernel_policy}: handovers {cols['handovers']}"
             + (f" (kill->handover {cols['kill_to_handover_s']} s)" if cols["kill_to_handover_s"] else ""))
    return status, error, note


def _outcome_dict(outcome: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(outcome)


def _log_mlflow(output: Path, sweep: str, cal: Calibration, uri: str | None, err: TextIO) -> None:
    """Kernel and model as sibling child runs (policy "kernel" and the model's policy) of one parent."""
    from sweeps.errors import TrackingError
    from sweeps.tracking.mlflow_log import log_sweep

    try:
        res = log_sweep(output, sweep, tracking_uri=uri, execution_id=cal.execution_id, experiment=sweep)
        _say(f"MLflow: experiment {res.experiment!r}, parent run {res.parent_run_id}", err)
    except (TrackingError, ValueError) as exc:
        _say(f"MLflow: not logged ({exc}); rows are safe in Parquet, `oomsweep log {output}` retries", err)

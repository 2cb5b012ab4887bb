"""`oomsweep calibrate`: run a scenario on a real 6.1 kernel under QEMU, beside the model's prediction.

Why it is built this way:
- The model is only worth what it predicts about the thing it models, so the kernel side runs the
  *same scenario file*: `translate()` turns it into reproducer parameters (infra/qemu/src/oomrepro.c)
  and refuses, naming the key path, every feature a stock kernel cannot run. Keys that are the
  model's own parameters (costs, `balance_interval_ms`, `ksoftirqd_awake_p`, page-table ratio) are
  not translated: on the kernel they are whatever the kernel does, which is what is measured.
- Kernel and model rows go into one sweep of the Parquet dataset with the model's columns plus
  `source` ("kernel" | "model"), `accelerator` ("tcg" | "kvm" | "" for model rows) and
  `kernel_release`; kernel rows sit under the policy partition "kernel", model rows under the
  policy label, so `oomsweep report` shows them side by side and MLflow logs them as sibling
  child runs of one parent (sweeps.tracking.mlflow_log.log_sweep).
- TCG stretches CPU-bound work against fixed timers (10-20x here): compare structure (who is
  the victim, who sets MMF_OOM_SKIP, which fixed delays) before rates; the accelerator is on
  every row.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sweeps.calibrate import kernels
from sweeps.calibrate.translate import DEBIAN_6_1, KernelFacts, ReproPlan, kernel_facts, match_kernel, translate
from sweeps.errors import EXIT_BAD_INPUT, InputError, UsageError, one_line
from sweeps.spec.oommodel_api import model_input_errors

KERNEL_POLICY = "kernel"
SOURCE_KERNEL, SOURCE_MODEL = "kernel", "model"
DEFAULT_OUTPUT = "calibration"

# --------------------------------------------------------------------------------------------------
# Rows


EXTRA_FIELDS = ("source", "accelerator", "kernel_release")


def row_schema(scenario: Mapping[str, Any]):
    """The sweep file schema (sweeps.storage.schema.file_schema, no grid columns) plus source/accelerator/kernel_release."""
    import pyarrow as pa

    from sweeps.storage import schema as S

    base = S.file_schema({}, S.cpu_keys_for(scenario))
    for name in EXTRA_FIELDS:
        base = base.append(pa.field(name, pa.string()))
    return base


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
         accelerator: str, release: str) -> dict[str, Any]:
    import os
    import socket

    from sweeps.storage.schema import outcome_columns

    row: dict[str, Any] = {
        "policy_name": policy_name,
        "policy_options": json.dumps(dict(options), sort_keys=True, separators=(",", ":")),
        "cell_id": cal.cell_id,
        "cell_index": 0,
        "replicate": replicate,
        "seed": seed,
        "execution_id": cal.execution_id,
        "model_version": cal.model_version,
        "scenario_json": cal.scenario_json,
        "status": status,
        "error": error,
        "wall_s": wall_s,
        "node_id": socket.gethostname(),
        "worker_pid": os.getpid(),
        "source": source,
        "accelerator": accelerator,
        "kernel_release": release,
    }
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
    """One line per (source, policy, accelerator): n, lockups, Wilson 95 % CI, stall median/max, kills."""
    from sweeps.analysis.stats import quantile, wilson

    out = []
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    keys = ["source", "policy", "accelerator"]
    for key, g in ok.groupby(keys, sort=True, dropna=False):
        est = wilson(int(g["lockup"].astype(bool).sum()), len(g))
        stall = [float(x) for x in g["max_stall_s"]]
        skip = [float(x) for x in g["first_skip_s"] if x is not None and not math.isnan(float(x))] \
            if "first_skip_s" in g else []
        kills = g["first_kill_s"].astype(float)
        out.append({
            **dict(zip(keys, key)), "n": len(g), "lockups": est.k, "p": est.p, "ci_low": est.low,
            "ci_high": est.high, "median_stall_s": quantile(stall, 0.5), "max_stall_s": max(stall, default=math.nan),
            "mean_kills": float(g["kills"].mean()), "median_first_kill_s": quantile(list(kills.dropna()), 0.5),
            "oom_skip_by": ",".join(f"{k}:{v}" for k, v in g["oom_skip_by"].value_counts().sort_index().items()),
            # killed tasks that freed their memory but had not exited (real-kernel-6.1.md section 4)
            "max_exits_pending": _max_or_nan(g, "exits_pending_max"),
            "max_exit_delay_s": _max_or_nan(g, "exit_delay_max_s"),
            "not_ok": 0,
        })
    if "status" in df.columns:
        for line in out:
            sel = (df["source"] == line["source"]) & (df["policy"] == line["policy"])
            line["not_ok"] = int((df[sel]["status"] != "ok").sum())
    return out


def _max_or_nan(g, column: str) -> float:
    """Largest value of a column over the runs (nan if absent or all null: rows of an older model)."""
    if column not in g:
        return math.nan
    values = g[column].astype(float).dropna()
    return float(values.max()) if len(values) else math.nan


def format_summary(lines: Sequence[Mapping[str, Any]]) -> str:
    head = ["source", "policy", "accel", "n", "lockups", "P(lockup) [95% CI]", "median stall", "max stall",
            "kills", "first kill", "MMF_OOM_SKIP by", "exits pending", "exit delay", "not ok"]
    rows = [head]
    for ln in lines:
        rows.append([
            ln["source"], ln["policy"], ln["accelerator"] or "-", str(ln["n"]), str(ln["lockups"]),
            f"{ln['p']:.3f} [{ln['ci_low']:.3f}, {ln['ci_high']:.3f}]", f"{ln['median_stall_s']:.3f} s",
            f"{ln['max_stall_s']:.3f} s", f"{ln['mean_kills']:.1f}", f"{ln['median_first_kill_s']:.3f} s",
            ln["oom_skip_by"], _fmt_max(ln.get("max_exits_pending"), "{:.0f}"),
            _fmt_max(ln.get("max_exit_delay_s"), "{:.3f} s"), str(ln["not_ok"]),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _fmt_max(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)


# --------------------------------------------------------------------------------------------------
# The command


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `calibrate` to an argparse subparsers object; the handler is `run_calibrate`."""
    p = subparsers.add_parser(
        "calibrate", help="run a scenario on a real 6.1 kernel under QEMU beside the model's prediction",
        description="Boot Debian's 6.1 kernel under QEMU (infra/qemu/ci-setup.sh fetches it), run the scenario "
                    "as a C reproducer --runs times, simulate it --seeds times, and store both in the dataset.")
    p.add_argument("scenario", metavar="SCENARIO.yaml")
    p.add_argument("--runs", type=int, default=1, help="kernel boots (one run each; default 1)")
    p.add_argument("--seeds", type=int, default=20, help="model replicates (default 20)")
    p.add_argument("--policy", default="upstream_6_1", help="model policy to compare with (default upstream_6_1)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"dataset directory (default ./{DEFAULT_OUTPUT})")
    p.add_argument("--sweep", help="sweep name in the dataset (default calibrate-<scenario file stem>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model replicates and of drawn start/rss values")
    p.add_argument("--match-kernel", action="store_true",
                   help="set machine.hz and machine.softirq to the kernel's (for both model and kernel)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"),
                   help="QEMU accelerator (auto: KVM only if a short probe boot works, else TCG)")
    p.add_argument("--kernel", help="kernel image, or the name of a kernel built by infra/kernels/build.sh "
                                    "(e.g. 5.10-oomsweep; default: newest vmlinuz-* in ~/.cache/oomsweep/kernel)")
    p.add_argument("--kernel-policy",
                   help="a built kernel's oomsweep.policy= (default: --policy); refused if the kernel lacks it")
    p.add_argument("--skip-after", default="pgtables", choices=("pgtables", "close"),
                   help="handoff_rfc_v2 on a built kernel: MMF_OOM_SKIP after the page tables or after ->close()")
    p.add_argument("--boot-timeout", type=float,
                   help="hard wall-clock limit per boot in seconds (default 60 + 2 x horizon_s)")
    p.add_argument("--logs", help="directory for each boot's console log (default OUTPUT/calibrate-logs)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=run_calibrate)
    return p


def _sweep_name(path: Path) -> str:
    stem = path.stem.removeprefix("calibrate-")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"calibrate-{stem}")
    return name[:100]


def _say(msg: str, stream: TextIO) -> None:
    print(msg, file=stream, flush=True)


def run_calibrate(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
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


def _calibrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from oommodel import POLICIES, Scenario

    from sweeps.calibrate import qemu
    from sweeps.storage import dataset
    from sweeps.storage.lock import SweepLock

    if args.runs < 0 or args.seeds < 0:
        raise UsageError("--runs/--seeds: must be >= 0")
    path = Path(args.scenario)
    scenario = Scenario.from_yaml(path).to_dict()
    if args.policy not in POLICIES:
        import difflib

        m = difflib.get_close_matches(args.policy, list(POLICIES), n=1)
        raise UsageError(f"--policy: unknown policy {args.policy!r}" + (f" (did you mean '{m[0]}'?)" if m else ""))
    options = POLICIES[args.policy].check_options({})

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
        args.kernel_policy = kpolicy
    else:
        if args.kernel_policy or args.skip_after != "pgtables":
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

    output = Path(args.output)
    sweep = args.sweep or _sweep_name(path)
    # One writer per sweep (kernel replicate numbers are taken from what is stored).
    with SweepLock(output, sweep):
        dataset.clean_stale_tmp(output, sweep)
        return _calibrate_locked(args, out, err, path, scenario, facts, kernel, plan, output, sweep, options,
                                 kspec)


def _calibrate_locked(args: argparse.Namespace, out: TextIO, err: TextIO, path: Path, scenario: dict[str, Any],
                      facts: KernelFacts, kernel: Path | None, plan: ReproPlan, output: Path, sweep: str,
                      options: dict[str, Any], kspec: kernels.KernelSpec | None = None) -> int:
    from oommodel import MODEL_VERSION, Scenario, simulate

    from sweeps.calibrate import qemu
    from sweeps.storage import dataset
    from sweeps.storage.lock import SweepLock
    from sweeps.spec.identity import canonical_json, cell_id, replicate_seed
    from sweeps.errors import KernelLogError
    from sweeps.calibrate.kernel_log import parse_run
    from sweeps.run.provenance import git_sha, package_versions
    from sweeps.storage.schema import SCHEMA_VERSION

    dataset.check_sweep_seed(output, sweep, args.seed)
    scenario_json = canonical_json(scenario)
    cal = Calibration(sweep, cell_id(scenario, MODEL_VERSION), scenario_json, MODEL_VERSION,
                      f"cal-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", args.seed)
    accel = qemu.choose_accelerator(kernel, args.accel) if kernel else ""
    provenance = {
        "sweep": sweep, "sweep_hash": cal.cell_id, "seed": args.seed, "model_version": MODEL_VERSION,
        "schema_version": SCHEMA_VERSION, "git_sha": git_sha(), "packages": package_versions(),
        "execution_id": cal.execution_id, "sweep_file": None, "scenario_file": str(path),
        "kernel": facts.release, "accelerator": accel, "command": "calibrate",
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    writer = dataset.DatasetWriter(output, sweep, row_schema(scenario), provenance, flush_seconds=1e9)
    _say(f"calibrate {path} -> {output}/sweep={sweep} (execution {cal.execution_id}); kernel {facts.release}, "
         f"accelerator {accel or '-'}, {args.runs} boot(s), {args.seeds} model replicate(s) of {args.policy}", err)

    # Model rows: replicates not stored yet (same seeds give the same rows).
    done = {r for c, p, r in dataset.done_keys(output, sweep) if p == args.policy and c == cal.cell_id}
    sc = Scenario.from_dict(scenario)
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
        model_rows.append(_row(cal, policy_name=args.policy, options=options, replicate=rep, seed=seed,
                               outcome=outcome, status=status, error=error, wall_s=time.perf_counter() - t,
                               source=SOURCE_MODEL, accelerator="", release=""))
    if model_rows:
        writer.add(args.policy, model_rows)
        writer.flush()
        _say(f"model: {len(model_rows)} replicate(s) simulated ({args.seeds - len(model_rows)} already stored)", err)

    if args.runs:
        base = qemu.base_initramfs()
        logs = Path(args.logs) if args.logs else output / "calibrate-logs" / sweep
        logs.mkdir(parents=True, exist_ok=True)
        limit = args.boot_timeout or 60.0 + 2.0 * plan.horizon_s
        first = _next_replicate(output, sweep, KERNEL_POLICY, cal.cell_id)
        for i in range(args.runs):
            rep = first + i
            if kspec is None:
                run_plan = translate(scenario, facts, args.seed + rep)  # run r draws its start offsets from seed + r
                cmdline = run_plan.cmdline()
            else:
                run_plan, cmdline, _, _ = kernels.boot_plan(scenario, kspec, args.kernel_policy,
                                                            skip_after=args.skip_after, seed=args.seed + rep)
            conf = run_plan.conf_text(rep)
            b = qemu.boot(kernel, base, {"oomrepro.conf": conf.encode()}, cpus=run_plan.cpus,
                          cmdline=cmdline, accelerator=accel, limit_s=limit)
            log = logs / f"{cal.execution_id}-run{rep}.log"
            log.write_text(b.console)
            outcome, status, error = None, "ok", ""
            note = ""
            try:
                run = parse_run(b.console, plan.groups)
                outcome = run.outcome
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
                        f"{run.exit_gap_max_s:.2f} s, preempt={run.preempt or '?'})")
            except KernelLogError as exc:
                status = "timeout" if b.timed_out else "error"
                error = str(exc) + (f" (boot exceeded {limit:.0f} s)" if b.timed_out else "")
                note = error
            kopts: dict[str, Any] = {"release": facts.release, "accelerator": accel}
            if kspec is not None:
                status, error, note = _patched_kernel_row(b.console, kspec, args, scenario["victim"]["sched_at_handover"],
                                                         outcome, kopts, status, error, note)
            failures += status != "ok"
            writer.add(KERNEL_POLICY, [_row(cal, policy_name=KERNEL_POLICY,
                                            options=kopts,
                                            replicate=rep, seed=args.seed + rep, outcome=outcome, status=status,
                                            error=error, wall_s=b.wall_s, source=SOURCE_KERNEL,
                                            accelerator=accel, release=facts.release)])
            writer.flush()
            _say(f"boot {i + 1}/{args.runs} [{accel}] {b.wall_s:.1f} s {status}: {note} (log {log})", err)
    writer.close()

    df = dataset.read_sweep(output, sweep)
    df = df[df["cell_id"] == cal.cell_id]
    if not df.empty:
        _say(f"sweep {sweep}, scenario {path.name} (cell {cal.cell_id}):", out)
        _say(format_summary(summary_table(df)), out)
    if not args.no_mlflow and not df.empty:
        _log_mlflow(output, sweep, cal, args.mlflow_uri, err)
    return 1 if failures else 0


def _patched_kernel_row(console: str, kspec: kernels.KernelSpec, args: argparse.Namespace, sched: str,
                        outcome: dict[str, Any] | None, kopts: dict[str, Any], status: str, error: str,
                        note: str) -> tuple[str, str, str]:
    """A built kernel's row: its instruments' handovers and MMF_OOM_SKIP setter, its policy and patch set."""
    cols = kernels.kernel_columns(console, kspec, args.kernel_policy, sched, args.skip_after)
    kopts.update({"kernel": kspec.name, "kernel_policy": args.kernel_policy, "skip_after": args.skip_after,
                  "sched_at_handover": cols["sched_at_handover"], "patch_hash": kspec.patch_hash,
                  "build_hash": kspec.build_hash[:12]})
    if outcome is not None:
        outcome["handovers"] = cols["handovers"]  # "Handed over N to exit path." lines
        outcome["handed_over"] = cols["handed_over"]
        if cols["skip_by_first"] != "none":  # the kernel's own printk, not the log heuristic
            outcome["oom_skip_by"] = outcome["released_by"] = cols["skip_by_first"]
    if cols["instrument_errors"] and status == "ok":
        status, error = "error", cols["instrument_errors"]
    note += (f"; {kspec.name} policy {args.kernel_policy}: handovers {cols['handovers']}"
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

"""`oomsweep calibrate`: its flags; the command itself is sweeps.calibrate.command."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from sweeps.calibrate.command import DEFAULT_OUTPUT, CalibrateOptions, run_calibrate


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `calibrate` to the `oomsweep` subcommands (sweeps.cli.commands maps it to `run`)."""
    p = subparsers.add_parser(
        "calibrate", help="run a scenario on a real kernel under QEMU beside the model's prediction",
        description="Boot a real kernel under QEMU (Debian's stock 6.1 by default, fetched by infra/qemu/ci-setup.sh; "
                    "--kernel 6.12, or a kernel built by infra/kernels/build.sh such as 5.10-oomsweep with every "
                    "policy of the 2018 thread), run the scenario "
                    "as a C reproducer --runs times, simulate it --seeds times, and store both in the dataset. "
                    "`oomsweep calibrate fit` fits the model's machine profile to the reference boots and checks it "
                    "(`oomsweep calibrate fit --help`).")
    p.add_argument("scenario", metavar="SCENARIO.yaml")
    p.add_argument("--runs", type=int, default=1, help="kernel boots (one run each; default 1)")
    p.add_argument("--seeds", type=int, default=20, help="model replicates (default 20)")
    p.add_argument("--policy", help="model policy to compare with (default: the kernel's policy if the model has it: "
                                    "--kernel-policy, else a built kernel's default, e.g. upstream_5_10; else upstream_6_1)")
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
                   help="a built kernel's oomsweep.policy= (default: --policy, else the kernel's default); "
                        "refused if the kernel lacks it")
    p.add_argument("--skip-after", default="pgtables", choices=("pgtables", "close"),
                   help="handoff_rfc_v2 on a built kernel: MMF_OOM_SKIP after the page tables or after ->close()")
    p.add_argument("--profile", help="machine profile of the model side (default: the scenario's machine.profile, "
                                     "else qemu_tcg; qemu_kvm, when measured, for a KVM boot)")
    p.add_argument("--boot-timeout", type=float,
                   help="hard wall-clock limit per boot in seconds (default 60 + 2 x horizon_s)")
    p.add_argument("--logs", help="directory for each boot's console log (default OUTPUT/calibrate-logs)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return p


def options(args: argparse.Namespace) -> CalibrateOptions:
    """The parsed flags as the command's options."""
    return CalibrateOptions(
        scenario=args.scenario, runs=args.runs, seeds=args.seeds, policy=args.policy, output=args.output,
        sweep=args.sweep, seed=args.seed, match_kernel=args.match_kernel, accel=args.accel, kernel=args.kernel,
        kernel_policy=args.kernel_policy, skip_after=args.skip_after,
        profile=args.profile, boot_timeout=args.boot_timeout, logs=args.logs, mlflow_uri=args.mlflow_uri,
        no_mlflow=args.no_mlflow,
    )


def run(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """0 ok, 1 some boot failed, 2 bad input or refused scenario (sweeps.calibrate.command.run_calibrate)."""
    return run_calibrate(options(args), stdout=stdout or sys.stdout, stderr=stderr or sys.stderr)

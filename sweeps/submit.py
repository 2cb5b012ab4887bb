"""Thin launcher for `ray submit CLUSTER.yaml sweeps/submit.py -- SWEEP.yaml [oomsweep run options]`.

`ray submit` copies only this one file to ~/submit.py on the head node and runs it there with
`python ~/submit.py ARGS` from $HOME (ecosystem.md §1.1).  So it imports nothing from the project:
it finds the sweep file (as given, else under the project copy that the cluster YAML's
file_mounts put on the node, ~/oomsweep by default or $OOMSWEEP_PROJECT), then runs the installed
package, `python -m sweeps run SWEEP --address auto ...`, against the cluster this node belongs to,
and exits with its exit code.  `ray submit` turns any failure into exit status 1.

Options before the sweep file belong to the launcher; everything after it goes to `oomsweep run`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_PROJECT = "~/oomsweep"


def find_sweep_file(name: str, project: str) -> Path:
    """The sweep file as given (absolute or relative to cwd), else relative to the project copy."""
    given = Path(os.path.expanduser(name))
    if given.is_absolute() or given.exists():
        return given
    candidate = Path(os.path.expanduser(project)) / name
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"{name}: no such sweep file here ({Path.cwd()}) or under {project}")


def build_command(sweep: Path, run_args: list[str], python: str = sys.executable) -> list[str]:
    """`python -m sweeps run SWEEP --address auto RUN_ARGS`; an --address in RUN_ARGS wins."""
    cmd = [python, "-m", "sweeps", "run", str(sweep)]
    if not any(a == "--address" or a.startswith("--address=") for a in run_args):
        cmd += ["--address", "auto"]
    return cmd + run_args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="submit.py", description=__doc__.splitlines()[0])
    p.add_argument("--project", default=os.environ.get("OOMSWEEP_PROJECT", DEFAULT_PROJECT),
                   help="where the cluster YAML's file_mounts put the project (default ~/oomsweep)")
    p.add_argument("--print-command", action="store_true", help="print the command instead of running it")
    p.add_argument("sweep_file", metavar="SWEEP.yaml")
    p.add_argument("run_args", nargs=argparse.REMAINDER, help="options for `oomsweep run`")
    args = p.parse_args(argv)
    try:
        sweep = find_sweep_file(args.sweep_file, args.project)
    except FileNotFoundError as exc:
        print(f"submit.py: error: {exc}", file=sys.stderr)
        return 2
    cmd = build_command(sweep, list(args.run_args))
    if args.print_command:
        print(" ".join(cmd))
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(f"submit.py: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The README's first command, timed: `oomsweep run configs/quick.yaml` in a fresh directory (fresh
sqlite store `mlflow.db`, fresh `results/`), for one or more oomsweep executables, alternated, so
a before/after pair runs under the same load.

    python benchmarks/bench_quick_logging.py [--before /path/to/other/checkout/.venv/bin/oomsweep]
                                             [--rounds 1] [--sweep configs/quick.yaml]

For each run it prints the wall time of the command, the MLflow logging time and its share as the
run itself reports them ("... child runs logged in X s (Y % of this run's Z s)"), the simulation
time (wall minus logging) and the load average before and after. Measured figures only, side by
side; it never fails on a timing. Other load on the machine skews every figure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGGED = re.compile(r"child runs logged in ([0-9.]+) s \((\d+) % of this run's (\d+) s\)")


def one_run(oomsweep: str, sweep: Path) -> dict:
    """Run the sweep once in a fresh temp dir; return what it took."""
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "configs", work / "configs")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run([oomsweep, "run", str(work / "configs" / sweep.name)], cwd=work, env=env,
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
        text = proc.stdout + proc.stderr
        m = LOGGED.search(text)
        mlflow_lines = [ln for ln in text.splitlines() if ln.startswith(("MLflow", "  open:"))]
        return {"exe": oomsweep, "exit": proc.returncode, "wall_s": wall,
                "logging_s": float(m.group(1)) if m else float("nan"),
                "share": m.group(2) + " %" if m else "?", "load0": load0, "load1": os.getloadavg()[0],
                "mlflow_lines": mlflow_lines, "tail": text.strip().splitlines()[-3:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--after", default=str(Path(sys.executable).with_name("oomsweep")),
                    help="the oomsweep to measure (default: this venv's)")
    ap.add_argument("--before", help="another oomsweep executable (e.g. main's checkout) to run beside it")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sweep", type=Path, default=Path("configs/quick.yaml"))
    args = ap.parse_args()
    exes = [("before", args.before)] if args.before else []
    exes.append(("after", args.after))
    rows = []
    for r in range(args.rounds):
        for label, exe in (exes if r % 2 == 0 else exes[::-1]):
            res = one_run(exe, args.sweep)
            rows.append((label, res))
            print(f"[{label}] exit {res['exit']}: " + " | ".join(res["mlflow_lines"] or res["tail"]), flush=True)
    print(f"\n{'run':<8}{'wall s':>8}{'logging s':>11}{'share':>7}{'sim+start s':>13}{'load':>12}")
    for label, res in rows:
        print(f"{label:<8}{res['wall_s']:>8.1f}{res['logging_s']:>11.1f}{res['share']:>7}"
              f"{res['wall_s'] - res['logging_s']:>13.1f}{res['load0']:>6.1f}->{res['load1']:<5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

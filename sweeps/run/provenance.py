"""Provenance of a sweep execution: what ran it (git commit, package versions) and with what.

Written into every Parquet file's metadata by the runner and by calibration, so that any row can be
traced to the code and the sweep file that produced it.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import sys
from pathlib import Path
from typing import Any

from sweeps.storage.schema import SCHEMA_VERSION

__all__ = ["git_sha", "package_versions", "provenance"]



def git_sha(start: Path | None = None) -> str | None:
    """HEAD of the git checkout holding this package, if any (no commits -> None)."""
    here = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("oomsweep", "ray", "pyarrow", "mlflow", "simpy", "numpy", "pandas", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    return out


def provenance(spec: Any, model_version: str, execution_id: str, sweep_file: str) -> dict[str, Any]:
    return {
        "sweep": spec.name,
        "sweep_hash": spec.sweep_hash,
        "seed": spec.seed,
        "model_version": model_version,
        "schema_version": SCHEMA_VERSION,
        "git_sha": git_sha(),
        "packages": package_versions(),
        "execution_id": execution_id,
        "replicate_start": getattr(spec, "replicate_start", 0),  # --replicate-block K: K * replicates
        "sweep_file": sweep_file,
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

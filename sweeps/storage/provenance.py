"""Provenance of a sweep execution: what ran it (git commit, package versions) and with what.

Written into every Parquet file's metadata by the runner and by calibration, so that any row can be
traced to the code and the sweep file that produced it; read back by tracking and history. One
builder and one `git_sha` here, so the keys the readers look for are written in one place.
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
    """Versions of the packages a row's numbers depend on (those installed), and Python's."""
    from importlib import metadata

    out = {}
    for name in ("oomsweep", "ray", "pyarrow", "mlflow", "simpy", "numpy", "pandas", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    return out


def provenance(*, sweep: str, sweep_hash: str, seed: int, model_version: str, execution_id: str,
               sweep_file: str | None, replicate_start: int = 0, **extra: Any) -> dict[str, Any]:
    """The provenance JSON of one execution's files.

    `replicate_start` is the first replicate of a `--replicate-block` run (K * replicates), so
    tracking summarises that block; `extra` carries what one writer adds (calibration: the
    scenario file, kernel and accelerator).
    """
    return {
        "sweep": sweep,
        "sweep_hash": sweep_hash,
        "seed": seed,
        "model_version": model_version,
        "schema_version": SCHEMA_VERSION,
        "git_sha": git_sha(),
        "packages": package_versions(),
        "execution_id": execution_id,
        "replicate_start": replicate_start,
        "sweep_file": sweep_file,
        **extra,
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

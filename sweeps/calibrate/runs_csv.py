"""The rows of a patched kernel's runs.csv (`python -m sweeps.calibrate.kernels measure`) as the
calibration reference reads them: each row with its boot's topology, the file counted into the
reference digest. One reader for the manifest's `measure:` entries (reference.py) and its
`kernel_checks:` sets (kernel_checks.py), so both see the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeps.errors import ReferenceError


def read_runs_csv(root: Path, dataset: str, where: str, digest: Any, files: list[str]) -> list[dict[str, str]]:
    """The rows of a patched kernel's runs.csv (sweeps/calibrate/kernels.py measure), each with its
    boot's `topology` (from the QEMU -smp of its `command`); the file goes into the digest."""
    import csv

    from sweeps.calibrate.kernels import boot_topology

    path = root / dataset
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ReferenceError(f"{where}.dataset: {exc}") from None
    if str(path.relative_to(root)) not in files:
        digest.update(path.read_bytes())
        files.append(str(path.relative_to(root)))
    return [{**r, "topology": boot_topology(r.get("command") or "")} for r in rows]

"""What `oomsweep verify OUTPUT` checks (its command is sweeps/cli/verify.py): every stored file of a dataset and say what is wrong.

Readers skip a file they cannot read (with a warning) and `run` sets it aside, so a damaged file
never stops a sweep; `verify` is the explicit check. Per visible part file: the footer, the declared
schema, every data page (each column decoded), the provenance JSON (present; its sweep, seed and
execution id agree with the directory, the sweep's other files and the rows). Per sweep: every key
(cell_id, policy, replicate) exactly once. Also listed: files set aside earlier (`.….corrupt`) and
unfinished `.tmp` files. Exit 0 when nothing is wrong, 1 when something is, 2 for bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

@dataclass
class SweepCheck:
    """What verify found in one sweep."""

    sweep: str
    files: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)  # "path: what is wrong"
    notes: list[str] = field(default_factory=list)  # set-aside and .tmp files: not wrong, worth knowing


def verify_sweep(output: str | Path, sweep: str) -> SweepCheck:
    """Check every visible file of one sweep (one file at a time; the keys of all rows at once)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sweeps.storage import dataset as storage
    from sweeps.storage.schema import PROVENANCE_KEY

    check = SweepCheck(sweep)
    keys: list[pa.Table] = []
    seeds: dict[int, Path] = {}
    for f in storage.list_files(output, sweep):
        check.files += 1
        problem = storage.file_problem(f)
        if problem is not None:
            check.problems.append(f"{f}: {problem}")
            continue
        try:
            table = pq.read_table(f, use_threads=False)
        except (pa.ArrowException, OSError, ValueError) as e:
            check.problems.append(f"{f}: damaged data ({storage.error_text(e)})")
            continue
        check.rows += table.num_rows
        raw = (pq.read_schema(f).metadata or {}).get(PROVENANCE_KEY)
        try:
            prov = json.loads(raw) if raw else None
        except ValueError:
            prov = None
            check.problems.append(f"{f}: provenance metadata is not JSON")
        if raw is None:
            check.problems.append(f"{f}: no provenance metadata ({PROVENANCE_KEY.decode()})")
        elif isinstance(prov, dict):
            check.problems += [f"{f}: {p}" for p in _provenance_problems(prov, sweep, table)]
            if isinstance(prov.get("seed"), int):
                seeds.setdefault(prov["seed"], f)
        policy = storage.policy_of(f)
        keys.append(pa.table({
            "cell_id": table.column("cell_id"),
            "policy": pa.array([policy] * table.num_rows, pa.string()),
            "replicate": table.column("replicate"),
        }))
        del table
    if len(seeds) > 1:
        check.problems.append(
            f"{storage.sweep_dir(output, sweep)}: files of several seeds ("
            + ", ".join(f"{s} in {p.name}" for s, p in sorted(seeds.items())) + ")")
    if keys:
        counts = pa.concat_tables(keys).group_by(["cell_id", "policy", "replicate"]).aggregate([([], "count_all")])
        dup = counts.filter(pc.greater(counts.column("count_all"), 1))
        if dup.num_rows:
            first = dup.slice(0, 1).to_pylist()[0]
            check.problems.append(
                f"{storage.sweep_dir(output, sweep)}: {dup.num_rows} keys (cell_id, policy, replicate) are stored "
                f"more than once, e.g. ({first['cell_id']}, {first['policy']}, {first['replicate']}) "
                f"{first['count_all']} times")
    root = storage.sweep_dir(output, sweep)
    for pdir in sorted(root.iterdir()) if root.is_dir() else []:
        if pdir.is_dir() and pdir.name.startswith("policy="):
            for f in sorted(pdir.iterdir()):
                if f.name.endswith(storage.CORRUPT_SUFFIX):
                    check.notes.append(f"{f}: set aside by an earlier run (its rows were computed again)")
                elif f.name.startswith(".") and f.name.endswith(storage.TMP_SUFFIX):
                    check.notes.append(f"{f}: unfinished write of a killed run (the next run deletes it)")
    return check


def _provenance_problems(prov: dict[str, Any], sweep: str, table: Any) -> list[str]:
    import pyarrow.compute as pc

    out = []
    if prov.get("sweep") != sweep:
        out.append(f"provenance names sweep {prov.get('sweep')!r}, the file is under sweep {sweep!r}")
    eid = prov.get("execution_id")
    if eid and "execution_id" in table.column_names and table.num_rows:
        ids = {str(x) for x in pc.unique(table.column("execution_id")).to_pylist()}
        if ids != {eid}:
            out.append(f"provenance says execution {eid}, the rows say {', '.join(sorted(ids))}")
    for k in ("seed", "sweep_hash", "model_version", "schema_version"):
        if k not in prov:
            out.append(f"provenance has no {k!r}")
    return out

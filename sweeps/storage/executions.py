"""Execution records: what each `oomsweep run` of a sweep was asked to do, and how far it got.

One small JSON file per execution, `output/sweep=<name>/_executions/<execution_id>.json`, written
atomically (temp file, fsync, rename) by the run that holds the sweep lock, so it is never half
written. The leading underscore keeps it out of pyarrow's and pandas' dataset discovery, and it is
not `*.parquet`, so DuckDB globs skip it too.

It holds the configuration (sweep-file hash, base-scenario hash, seed, the cell ids, policies and
replicate range of the plan), so that `report` and `compare` can show the current configuration's
rows instead of pooling every configuration ever run into the output (`sweeps.analysis.selection`); and the
progress of the execution: `state` ("running" until its rows are stored, then "stored",
"interrupted" or "failed") and `mlflow.state`:

    off      --no-mlflow
    pending  rows not stored yet
    none     no rows written: nothing to log
    logging  logging started (a driver killed now leaves it so: the next run finishes it)
    logged   the parent run is FINISHED (mlflow.parent_run_id)
    failed   the store refused or was unreachable (mlflow.error); the next run tries again
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeps.storage.dataset import TMP_SUFFIX, fsync_dir, sweep_dir

DIR_NAME = "_executions"
RECORD_VERSION = 1
MLFLOW_UNFINISHED = ("logging", "failed")  # states a later run (or `oomsweep log`) completes


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def records_dir(output: str | Path, sweep: str) -> Path:
    return sweep_dir(output, sweep) / DIR_NAME


def record_path(output: str | Path, sweep: str, execution_id: str) -> Path:
    return records_dir(output, sweep) / f"{execution_id}.json"


def write_record(output: str | Path, sweep: str, record: Mapping[str, Any]) -> Path:
    """Write (or replace) one execution's record atomically."""
    d = records_dir(output, sweep)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{record['execution_id']}.json"
    tmp = d / f".{final.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(record), fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(d)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return final


def read_records(output: str | Path, sweep: str) -> list[dict[str, Any]]:
    """Every readable record of a sweep, oldest first (a damaged record is skipped: it only costs
    the default selection and the MLflow completion of that one execution)."""
    d = records_dir(output, sweep)
    out = []
    if not d.is_dir():
        return out
    for f in d.glob("*.json"):
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("execution_id") == f.stem:
            out.append(rec)
    return sorted(out, key=lambda r: (str(r.get("started", "")), str(r["execution_id"])))


def read_record(output: str | Path, sweep: str, execution_id: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(record_path(output, sweep, execution_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def update_record(output: str | Path, sweep: str, execution_id: str, *, mlflow: Mapping[str, Any] | None = None,
                  **changes: Any) -> dict[str, Any] | None:
    """Merge `changes` (and `mlflow` into its sub-mapping) into a record; None if there is none."""
    rec = read_record(output, sweep, execution_id)
    if rec is None:
        return None
    rec.update(changes)
    if mlflow is not None:
        rec["mlflow"] = {**rec.get("mlflow", {}), **mlflow, "updated": now()}
    write_record(output, sweep, rec)
    return rec


def mark_logged(output: str | Path, sweep: str, execution_id: str, result: Any) -> None:
    """After a successful log_sweep (from a run or from `oomsweep log`): best effort, since a
    read-only output can still be logged from."""
    try:
        update_record(output, sweep, execution_id, mlflow={
            "state": "logged", "parent_run_id": getattr(result, "parent_run_id", ""),
            "experiment": getattr(result, "experiment", ""), "uri": getattr(result, "tracking_uri", ""),
        })
    except OSError:
        pass


def new_record(spec: Any, execution_id: str, model_version: str, sweep_file: str, cell_ids: Any,
               mlflow_on: bool) -> dict[str, Any]:
    from sweeps.spec.identity import canonical_json
    import hashlib

    adaptive = not isinstance(spec.replicates, int)
    reps = None if adaptive else [spec.replicate_range.start, spec.replicate_range.stop]
    return {
        "record_version": RECORD_VERSION,
        "execution_id": execution_id,
        "sweep": spec.name,
        "sweep_hash": spec.sweep_hash,
        "base_hash": hashlib.sha256(canonical_json(spec.base).encode("ascii")).hexdigest(),
        "seed": spec.seed,
        "model_version": model_version,
        "sweep_file": sweep_file,
        "started": now(),
        "policies": [p.label for p in spec.policies],
        "replicates": reps,  # [start, stop) of a fixed sweep; None when adaptive
        "cells": sorted(cell_ids),
        "state": "running",
        "rows_written": 0,
        "mlflow": {"state": "pending" if mlflow_on else "off"},
    }

"""The Parquet result schema, declared once.

Every file of a sweep's dataset carries the same column layout: identity, the
grid parameters that vary (typed), the canonical scenario, every `Outcome`
field (``cpu_s`` flattened), and execution status.  The partition columns
(``sweep``, ``policy``) live in the directory names, never in the files.
Bump SCHEMA_VERSION whenever a column is renamed, retyped or removed, or its meaning changes.

Versions: 1, the first; 2, `lockup_reason` holds the `oommodel.outcome.LockupReason` label only
(groupable) and the new `lockup_detail` its particulars (victim, phase, CPU), which version 1 kept
in `lockup_reason` as one text "label: detail". A version-1 dataset is still read (its
`lockup_detail` is null, its `lockup_reason` the old text); rows are never appended to it
(`dataset.check_sweep_schema`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 2
PROVENANCE_KEY = b"oomsweep.provenance"

PARTITION_FIELDS: tuple[pa.Field, ...] = (
    pa.field("sweep", pa.string()),
    pa.field("policy", pa.string()),
)

IDENTITY_FIELDS: tuple[pa.Field, ...] = (
    pa.field("policy_name", pa.string()),
    pa.field("policy_options", pa.string()),
    pa.field("cell_id", pa.string()),
    pa.field("cell_index", pa.int64()),
    pa.field("replicate", pa.int64()),
    pa.field("seed", pa.int64()),
    pa.field("execution_id", pa.string()),
    pa.field("model_version", pa.string()),
)

SCENARIO_FIELD = pa.field("scenario_json", pa.string())

# Outcome fields in the order of oommodel.outcome.Outcome (cpu_s is flattened separately).
OUTCOME_FIELDS: tuple[pa.Field, ...] = (
    pa.field("lockup", pa.bool_()),
    pa.field("lockup_reason", pa.string()),  # a LockupReason label ("" without a lockup)
    pa.field("lockup_detail", pa.string()),  # schema 2+: the particulars ("" without a lockup)
    pa.field("max_stall_s", pa.float64()),
    pa.field("first_progress_s", pa.float64()),
    pa.field("first_kill_s", pa.float64()),
    pa.field("first_skip_s", pa.float64()),
    pa.field("kills", pa.int64()),
    pa.field("extra_kills", pa.int64()),
    pa.field("handed_over", pa.bool_()),
    pa.field("handovers", pa.int64()),
    pa.field("oom_skip_by", pa.string()),
    pa.field("released_by", pa.string()),
    pa.field("reaper_attempts", pa.int64()),
    pa.field("memory_freed_mb", pa.float64()),
    pa.field("panic", pa.bool_()),
    pa.field("victims_pending_at_end", pa.int64()),
    pa.field("oom_calls", pa.int64()),
    pa.field("sim_time_s", pa.float64()),
    pa.field("sim_events", pa.int64()),
    pa.field("exits_pending_max", pa.int64()),
    pa.field("exit_delay_max_s", pa.float64()),
)

# The columns `oomsweep calibrate` adds to its rows (sweeps.calibrate.command.row_schema): where a
# row came from (a kernel boot or the model, on which accelerator and kernel) and, per kernel row,
# the CPU topology of the boot (QEMU's -smp value and command line, what the guest's /sys
# reported). They describe a row, they are not parameters of a grid: MLflow's cell runs and the
# report's plots must not take them for grid keys (a model cell named "source=kernel ...").
CALIBRATION_FIELDS: tuple[pa.Field, ...] = (
    pa.field("source", pa.string()),  # "kernel" | "model"
    pa.field("accelerator", pa.string()),  # "tcg" | "kvm"; "" in model rows
    pa.field("kernel_release", pa.string()),
    pa.field("qemu_smp", pa.string()),
    pa.field("qemu_command", pa.string()),
    pa.field("guest_topology", pa.string()),
    pa.field("guest_llc_groups", pa.int32()),
)

STATUS_FIELDS: tuple[pa.Field, ...] = (
    pa.field("status", pa.string()),  # "ok" | "error" | "timeout"
    pa.field("error", pa.string()),  # "" when ok
    pa.field("wall_s", pa.float64()),
    pa.field("node_id", pa.string()),
    pa.field("worker_pid", pa.int64()),
)

# The columns resume needs: a row is done when its key is present in a visible file.
KEY_COLUMNS = ("cell_id", "replicate")  # plus the `policy` partition

# Host-side CPU accounts every Outcome.cpu_s carries besides one entry per group.
FIXED_CPU_KEYS = ("oom_reaper", "victim", "ksoftirqd")

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_TIMEOUT = "timeout"


def cpu_column(key: str) -> str:
    """Column name of one Outcome.cpu_s entry."""
    return f"cpu_s.{key}"


def cpu_keys_for(scenario: Mapping[str, Any]) -> list[str]:
    """The cpu_s keys a scenario's outcome carries: its group names and the fixed accounts."""
    names = [str(g["name"]) for g in scenario.get("groups", ()) if isinstance(g, Mapping) and "name" in g]
    return names + [k for k in FIXED_CPU_KEYS if k not in names]


def param_type(values: Iterable[Any]) -> pa.DataType:
    """Arrow type for a grid/sample parameter column from the values it takes.

    bool stays bool (checked first: bool is an int in Python); ints stay int64;
    ints mixed with floats widen to float64; anything else is stored as a string
    (JSON for lists, dicts and distribution mappings).
    """
    kinds = set()
    for v in values:
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif v is None:
            continue
        else:
            kinds.add("str")
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    if not kinds:
        return pa.string()
    return pa.string()


def param_value(value: Any, typ: pa.DataType) -> Any:
    """Convert a parameter value to what its column holds."""
    if value is None:
        return None
    if pa.types.is_string(typ):
        if isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if pa.types.is_floating(typ):
        return float(value)
    return value


def file_schema(params: Mapping[str, pa.DataType], cpu_keys: Sequence[str]) -> pa.Schema:
    """Schema of one Parquet file of a sweep (no partition columns).

    `params` maps column name (identity.param_column of the grid key) to type, in
    grid order; `cpu_keys` lists the Outcome.cpu_s keys.
    """
    fields = list(IDENTITY_FIELDS)
    fields += [pa.field(name, typ) for name, typ in params.items()]
    fields.append(SCENARIO_FIELD)
    fields += list(OUTCOME_FIELDS)
    fields += [pa.field(cpu_column(k), pa.float64()) for k in cpu_keys]
    fields += list(STATUS_FIELDS)
    names = [f.name for f in fields]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"parameter columns clash with result columns: {sorted(dupes)}")
    return pa.schema(fields)


def dataset_schema(schema: pa.Schema) -> pa.Schema:
    """A file schema with the partition columns in front (what readers see)."""
    out = schema
    for i, f in enumerate(PARTITION_FIELDS):
        if f.name not in out.names:
            out = out.insert(i, f)
    return out


def outcome_columns(outcome: Any) -> dict[str, Any]:
    """Flatten an Outcome (dataclass or dict) into result columns; cpu_s becomes cpu_s.<key>."""
    if isinstance(outcome, Mapping):
        data = dict(outcome)
    else:
        import dataclasses

        data = dataclasses.asdict(outcome)
    cols: dict[str, Any] = {}
    for f in OUTCOME_FIELDS:
        v = data.get(f.name)
        if isinstance(v, float) and math.isnan(v) and not pa.types.is_floating(f.type):
            v = None
        cols[f.name] = v
    for k, v in (data.get("cpu_s") or {}).items():
        cols[cpu_column(str(k))] = None if v is None else float(v)
    return cols

"""Record a sweep in MLflow, from the driver, after the rows are safe in Parquet.

Why this shape:
- The Parquet dataset is the record; MLflow gets summaries computed from it (one parent run per
  execution, one child per policy, one child per (cell, policy) while that stays small), so a sweep
  can be logged later (`oomsweep log OUTPUT`) and an unreachable store never costs a result.
- Each child run is three store calls, the fewest MLflow's public API allows: create_run carrying
  all its tags and the run name, one log_batch with params and metrics, set_terminated. Where the
  time goes (benchmarks/bench_tracking.py, 2-core machine shared with other jobs): MLflow's
  SqlAlchemyStore spends ~15-20 ms of CPU per run (about 12 ORM sessions, four of them writing
  commits, each an fsync), wherever it runs. On a SQLite store that is this process, under the GIL, and writers
  take the database lock in turn, so children are logged serially (threads were slower: lock
  waits). Against `mlflow server` it is the server: ~40-50 ms of server CPU per run (handler plus
  store), which bounds throughput however the client behaves. Separately, `mlflow server` with
  uvicorn and --workers > 1 (the default is 4) answers a kept-alive request ~40 ms late: uvicorn
  binds the shared socket itself with proto 0, so asyncio never sets TCP_NODELAY on accepted
  connections, and the body (sent after the headers) waits for the client's delayed ACK. Threads
  hide that stall (it costs no CPU), so child runs go through a small pool against a server, no
  larger than MLflow's HTTP connection pool (see _child_threads); nothing here changes a socket,
  pool or environment setting of the process.
- Summaries come from one columnar scan of the Parquet files (only the columns needed, in
  batches): per-(cell, policy) totals plus two floats per row (max_stall_s for exact quantiles,
  wall_s for a sum bit-identical to pandas'), not a DataFrame of every row (see _scan).
- The parent is marked FINISHED last, so "a FINISHED parent tagged with this execution_id exists"
  means the whole execution is logged: that is the idempotency key. An unfinished parent left by
  an interrupted attempt (a driver killed while logging) is completed in place when it recorded the
  same row counts: its finished children are kept, the missing ones added, then it is FINISHED, so
  one execution never has two parents. An attempt that cannot be completed (other row counts, or
  a second unfinished copy) is deleted with its children and logged again.
- Never the file store: it is in maintenance mode since MLflow 3.13 and slow with many runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_EXCEPTION
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from sweeps.analysis.plots import write_plots
from sweeps.analysis.report import format_text, stored_horizon
from sweeps.analysis.stats import KaplanMeier
from sweeps.analysis.summary import SUMMARY_COLUMNS, Tally, order_policies
from sweeps.errors import TrackingError
from sweeps.storage import schema
from sweeps.storage.dataset import error_text, list_files, open_dataset, read_provenance, readable_files, sweep_dir, warn_skipped
from sweeps.storage.provenance import git_sha

if TYPE_CHECKING:  # the spec module is only needed for its type here
    from sweeps.spec.model import SweepSpec

__all__ = [
    "TrackingError",
    "TrackingResult",
    "log_sweep",
    "StoreWarmup",
    "resolve_tracking_uri",
    "grid_columns",
    "block_text",
    "mlflow_key",
    "METRICS",
    "LogPlan",
    "plan_log",
    "runs_view_path",
    "active_experiment_ids",
    "headline",
    "view_state_of",
    "TAG_EXECUTION",
    "TAG_SWEEP",
    "TAG_ROLE",
]

TAG_EXECUTION = "oomsweep.execution_id"
TAG_SWEEP = "oomsweep.sweep"
TAG_ROLE = "oomsweep.role"  # "parent" | "policy" | "cell"
TAG_CELL = "oomsweep.cell_id"
TAG_CHILD = "oomsweep.child"  # "policy:<label>" | "cell:<cell_id>:<label>": what a resumed logging skips
PARENT_TAG = "mlflow.parentRunId"
DATASET_CONTEXT = "oomsweep.cells"

# Same names in every run (policy children, cell children) and in every table (report, calibrate):
# sweeps.analysis.summary.SUMMARY_COLUMNS, so the compare view lines up with the printed tables.
METRICS = tuple(c for c in SUMMARY_COLUMNS if c != "failed_rows")
FAILED_METRIC = "failed_rows"  # rows with status != "ok": not in n, but worth seeing next to it

# Columns of a sweep row that are not grid/sample parameters: everything the schema declares.
_ROW_COLUMNS = frozenset(
    f.name
    for f in (*schema.PARTITION_FIELDS, *schema.IDENTITY_FIELDS, schema.SCENARIO_FIELD,
              *schema.OUTCOME_FIELDS, *schema.STATUS_FIELDS, *schema.CALIBRATION_FIELDS)
)
_CPU_PREFIX = schema.cpu_column("")
_MAX_PARAM = 6000  # MLflow truncates longer param values with a warning
_MAX_TAG = 8000
_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # as sweeps.spec.parse validates it
_EXECUTION_ID = re.compile(r"^[A-Za-z0-9_.:+-]{1,200}$")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_HEALTH_TIMEOUT_S = 5.0
_SERVER_THREADS = 8  # child-run loggers against a server (capped by MLflow's HTTP pool; see _child_threads)


@dataclass(frozen=True)
class TrackingResult:
    """What log_sweep() did. `already_logged`: a FINISHED parent existed; nothing was written."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    policy_runs: int = 0
    cell_runs: int = 0
    already_logged: bool = False
    seconds: float = 0.0
    resumed: bool = False  # an unfinished parent of this execution was completed in place
    notes: tuple[str, ...] = field(default_factory=tuple)
    ui_path: str = ""  # runs_view_path(experiment_id): append to the MLflow UI's http://host:port


# --------------------------------------------------------------------------------------------------
# Tracking URI


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """tracking_uri, else $MLFLOW_TRACKING_URI, else MLflow's default: sqlite:///<cwd>/mlflow.db.

    MLflow's own default falls back to the file store when ./mlruns holds old experiments; that
    fallback is skipped here on purpose. A file-store URI is refused with a TrackingError.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        uri = "sqlite:///" + str(Path.cwd() / "mlflow.db")
    scheme = urlsplit(uri).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\"):
        raise TrackingError(
            f"MLflow tracking URI {uri!r} is a file store, which oomsweep does not use (MLflow keeps it "
            "in maintenance mode). Use sqlite:///mlflow.db or an http(s):// server; old ./mlruns data "
            "can be moved with `mlflow migrate-filestore --source ./mlruns --target sqlite:///mlflow.db`."
        )
    return uri


def _display_uri(uri: str) -> str:
    """The URI without user:password@, for messages."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def _store_errors() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException

    errors: list[type[BaseException]] = [MlflowException, OSError]
    with contextlib.suppress(ImportError):
        import requests

        errors.append(requests.exceptions.RequestException)
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    return tuple(errors)


@contextlib.contextmanager
def _talking_to(uri: str, what: str) -> Iterator[None]:
    """Turn any store/transport failure into one TrackingError that says where and what."""
    try:
        yield
    except TrackingError:
        raise
    except _store_errors() as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
        raise TrackingError(f"MLflow tracking at {_display_uri(uri)}: {what} failed: {first}") from e


def _check_reachable(uri: str) -> None:
    """Fail fast on an http(s) store that does not answer: MLflow's own retries take minutes."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=_HEALTH_TIMEOUT_S)
    except requests.exceptions.RequestException as e:
        raise TrackingError(
            f"MLflow tracking at {_display_uri(uri)} is unreachable ({type(e).__name__}); the results "
            "are in Parquet, log them later with `oomsweep log OUTPUT`"
        ) from e


# --------------------------------------------------------------------------------------------------
# Rows and summaries (pure over DataFrames)


def _provenance(output: Path, sweep: str, execution_id: str) -> dict:
    """Provenance JSON written by this execution (else the newest file's; {} when none is readable)."""
    files = sorted(list_files(output, sweep), key=lambda p: p.stat().st_mtime, reverse=True)
    newest: dict = {}
    for path in files:
        try:
            found = read_provenance(path)
        except (OSError, ValueError):  # unreadable footer: another file will do
            continue
        if found.get("execution_id") == execution_id:
            return found
        newest = newest or found
    return newest


def _spec_from_provenance(provenance: Mapping[str, Any]) -> SweepSpec | None:
    """The sweep file this execution ran, if it is still there and unchanged (same sweep_hash)."""
    path = provenance.get("sweep_file")
    if not path or not Path(path).is_file():
        return None
    try:
        from sweeps.spec.parse import load_sweep

        spec = load_sweep(path)
    except (ImportError, OSError, ValueError):  # edited since, or unloadable here: log without it
        return None
    if spec.sweep_hash != provenance.get("sweep_hash"):
        return None
    start = int(provenance.get("replicate_start") or 0)  # the run's --replicate-block
    return dataclasses.replace(spec, replicate_start=start) if start and spec.adaptive is None else spec


def grid_columns(rows: pd.DataFrame, spec: SweepSpec | None = None) -> list[str]:
    """The row columns that hold grid/sample parameters, in the sweep file's order when known."""
    return _grid_of(list(rows.columns), spec)


def _grid_of(names: Sequence[str], spec: SweepSpec | None) -> list[str]:
    present = [c for c in names if c not in _ROW_COLUMNS and not c.startswith(_CPU_PREFIX)]
    if spec is None:
        return present
    from sweeps.spec.identity import param_column

    keys = list(spec.grid)
    if spec.sample is not None:
        keys += [k for k in spec.sample.params if k not in keys]
    ordered = [param_column(k) for k in keys]
    return [c for c in ordered if c in names] + [c for c in present if c not in ordered]


# --------------------------------------------------------------------------------------------------
# Streaming summary of the stored rows (backfill with `oomsweep log` reads nothing else)


_MISSING = object()  # None and NaN as one value, as pandas' nunique(dropna=False) counts them
_SCAN_BATCH_ROWS = 65_536


@dataclass
class _Summary:
    """Everything log_sweep needs from the stored rows, computed in one columnar scan."""

    names: list[str]
    grid: list[str]
    rows: int = 0
    rows_ok: int = 0
    rows_in_execution: int = 0
    wall_s: list = field(default_factory=list)  # float64 arrays: summed once, in row order, at the end
    model_versions: set = field(default_factory=set)
    policy_first: dict = field(default_factory=dict)  # policy -> (policy_name of its first row, options)
    groups: dict = field(default_factory=dict)  # (cell_id, policy) -> Tally
    cell_first: pd.DataFrame | None = None  # per cell_id: first non-null cell_index and grid values
    distinct: dict = field(default_factory=dict)  # grid column -> set of values (for _grid_text)
    horizon_s: float | None = None  # the sweep's horizon unless it varies (a grid column then): censoring

    @property
    def policies_found(self) -> list[str]:
        return sorted({p for _, p in self.groups})

    @property
    def n_cells(self) -> int:
        return len({c for c, _ in self.groups})

    def sim_cpu_s(self) -> float:
        if "wall_s" not in self.names:
            return 0.0
        return float(pd.Series(np.concatenate(self.wall_s) if self.wall_s else np.empty(0)).sum())

    def policy_group(self, policy: str) -> Tally:
        total = Tally()
        for (_, p), g in sorted(self.groups.items()):
            if p == policy:
                total.merge(g)
        return total

    def policy_table(self, policies: Sequence[str] = ()) -> pd.DataFrame:
        """One row per policy, in the order of `policies` (then the others found): policy, SUMMARY_COLUMNS."""
        order = order_policies(self.policies_found, policies)
        records = [{"policy": p, **self.policy_group(p).summary()} for p in order]
        return pd.DataFrame.from_records(records, columns=["policy", *SUMMARY_COLUMNS])

    def cell_table(self) -> pd.DataFrame:
        """Per (cell, policy): cell_index, grid values and SUMMARY_COLUMNS; the dataset recorded with log_input."""
        records = [{"cell_id": c, "policy": p, **g.summary()} for (c, p), g in sorted(self.groups.items())]
        table = pd.DataFrame.from_records(records, columns=["cell_id", "policy", *SUMMARY_COLUMNS])
        cells = self.cell_first.reset_index()
        table = cells.merge(table, on="cell_id", how="right")
        return table.sort_values(["cell_index", "policy"], kind="stable").reset_index(drop=True)

    def replicates_text(self) -> str:
        counts = [g.rows for g in self.groups.values()]
        lo, hi = (min(counts), max(counts)) if counts else (0, 0)
        return str(lo) if lo == hi else f"{lo}..{hi}"

    def grid_text(self) -> str:
        return ", ".join(f"{c}={len(self.distinct.get(c, ()))}" for c in self.grid) or "(single cell)"


def _missing_to_key(v: Any) -> Any:
    return _MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _scan(output: Path, sweep: str, spec: SweepSpec | None, execution_id: str) -> _Summary:
    """One pass over the sweep's Parquet files with only the columns a summary needs.

    Memory is O(cells) for the per-(cell, policy) totals and first grid values, plus two float64
    per row: max_stall_s of the ok rows (exact median/p99 need every value) and wall_s (summed once
    at the end, in row order, so sim_cpu_s is bit-identical to the pandas sum it replaces); one
    batch of the needed columns at a time. Before, every column of every row sat in pandas. The numbers are those of the all-rows pandas summary it replaced (tests/sweeps/tracking_oracle.py) over the rows the
    spec selects (its policies, replicate < replicates), as before.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = readable_files(output, sweep)  # a bad file is named on stderr and left out
    names: dict[str, None] = {}
    for path in files:
        names.update(dict.fromkeys(pq.read_schema(path).names))
    if files:
        names = {"sweep": None, "policy": None, **names}  # partition columns, first as read_sweep puts them
    summary = _Summary(names=list(names), grid=_grid_of(list(names), spec))
    if not files:
        return summary
    summary.horizon_s = _horizon(spec, output, sweep)
    wanted = ["policy", "cell_id", "cell_index", "status", "lockup", "max_stall_s", "kills", "handed_over",
              "sim_time_s", "victims_pending_at_end",  # censoring: sweeps.analysis.summary.stall_censored
              "model_version", "execution_id", "wall_s", "policy_name", "policy_options", *summary.grid]
    columns = [c for c in dict.fromkeys(wanted) if c in names and c != "sweep"]
    expr = None
    if spec is not None:
        expr = pc.field("policy").isin([p.label for p in spec.policies])
        if isinstance(spec.replicates, int) and "replicate" in names:
            start = spec.replicate_start  # this run's block (--replicate-block), else 0
            expr &= (pc.field("replicate") >= start) & (pc.field("replicate") < start + spec.replicates)
    dataset = open_dataset(output, sweep, files)
    first_cols = [c for c in ["cell_index", *summary.grid] if c in columns]
    # One file at a time, in the dataset's order: a dataset-wide scan reads files ahead while the
    # batches are summarised (measured: most of the dataset's decoded columns live at once). The
    # batches of small files are pooled up to _SCAN_BATCH_ROWS rows before they are summarised: a
    # sweep writes one file per few hundred rows, and the pandas group-bys cost per call, not per
    # row (the quick sweep: 105 files of ~6 rows; one call instead of 105 took its scan from 14.7 s
    # to 3 s on the loaded 2-core machine).
    pending: list[pa.RecordBatch] = []

    def flush() -> None:
        if pending:
            frame = pa.Table.from_batches(pending, schema=pending[0].schema).to_pandas()
            pending.clear()
            for col in ("policy", "status", "cell_id"):
                if col in frame.columns:
                    frame[col] = frame[col].astype(str)
            _scan_batch(summary, frame, first_cols, execution_id)

    for fragment in dataset.get_fragments(filter=expr):
        summarised = False
        mine = 0  # batches of this fragment in `pending`
        try:
            for batch in fragment.to_batches(schema=dataset.schema, columns=columns, filter=expr,
                                             batch_size=_SCAN_BATCH_ROWS, use_threads=False):
                if batch.num_rows == 0:
                    continue
                pending.append(batch)
                mine += 1
                if sum(b.num_rows for b in pending) >= _SCAN_BATCH_ROWS:
                    flush()
                    summarised, mine = True, 0
        except (pa.ArrowException, OSError) as exc:  # damaged pages under a sound footer
            cause = f"damaged data ({error_text(exc)})"
            if summarised:  # part of its rows are in the totals: nothing honest to log
                raise TrackingError(f"{fragment.path}: {cause}; run `oomsweep run` on the sweep to set it "
                                    f"aside and recompute its rows, then log again") from None
            del pending[len(pending) - mine:]  # none of its rows counted: the file is left out
            warn_skipped(Path(fragment.path), cause)
    flush()
    return summary


def _horizon(spec: SweepSpec | None, output: Path, sweep: str) -> float | None:
    """horizon_s of the sweep's base scenario, else of its first stored row (None if unreadable)."""
    if spec is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return float(spec.base["horizon_s"])
    return stored_horizon(output, sweep)


def _scan_batch(summary: _Summary, frame: pd.DataFrame, first_cols: list[str], execution_id: str) -> None:
    summary.rows += len(frame)
    ok_mask = frame["status"] == "ok" if "status" in frame.columns else pd.Series(True, index=frame.index)
    summary.rows_ok += int(ok_mask.sum())
    if "execution_id" in frame.columns:
        summary.rows_in_execution += int((frame["execution_id"] == execution_id).sum())
    if "wall_s" in frame.columns:
        summary.wall_s.append(frame["wall_s"].astype(float).to_numpy(copy=True))
    if "model_version" in frame.columns:
        summary.model_versions.update(map(str, pd.unique(frame["model_version"])))
    for col in summary.grid:
        if col in frame.columns:
            summary.distinct.setdefault(col, set()).update(map(_missing_to_key, pd.unique(frame[col])))
    for policy, part in frame.groupby("policy", sort=False):
        if policy not in summary.policy_first:
            name = part["policy_name"].iloc[0] if "policy_name" in part.columns else _MISSING
            summary.policy_first[policy] = [name, None]
        entry = summary.policy_first[policy]
        if entry[1] is None and "policy_options" in part.columns:
            values = part["policy_options"].dropna()
            if not values.empty:
                entry[1] = values.iloc[0]
    for key, g in frame.groupby(["cell_id", "policy"], sort=False, observed=True):
        summary.groups.setdefault(key, Tally()).add_rows(g, summary.horizon_s)
    firsts = frame.groupby("cell_id", sort=False)[first_cols].first()
    if summary.cell_first is None:
        summary.cell_first = firsts
    else:
        merged = pd.concat([summary.cell_first, firsts])
        summary.cell_first = merged.groupby(level=0, sort=False).first()


def _policy_info(summary: _Summary, policy: str) -> tuple[str | None, dict]:
    """(policy_name of its first row or None without that column, options of its first non-null policy_options)."""
    name, raw = summary.policy_first.get(policy, (_MISSING, None))
    options: dict = {}
    if raw is not None:
        with contextlib.suppress(ValueError, TypeError):
            opts = json.loads(raw)
            options = opts if isinstance(opts, dict) else {}
    return (None if name is _MISSING else str(name)), options


def mlflow_key(name: str) -> str:
    """A param/metric key MLflow accepts everywhere: alphanumerics and `_ - . / space`, <= 250 chars."""
    return _UNSAFE_KEY.sub("_", name)[:250] or "_"


def _value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        text = "true" if v else "false"
    elif isinstance(v, (float, np.floating)):
        text = repr(float(v))
    elif isinstance(v, np.integer):
        text = str(int(v))
    else:
        text = str(v)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 1] + "…"


# --------------------------------------------------------------------------------------------------
# What gets logged


@dataclass(frozen=True)
class _RunPlan:
    """One child run: everything it needs, decided before any store call."""

    name: str
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class LogPlan:
    """Everything one execution's logging writes, decided before any store call (plan_log)."""

    experiment: str
    experiment_tags: Mapping[str, str]  # set on the experiment: its kind and the runs-table view
    parent: _RunPlan
    children: tuple[_RunPlan, ...]  # tags without the parent's id (known only once it exists)
    table: pd.DataFrame  # per policy, the sweep's order
    cells: pd.DataFrame  # per (cell, policy)
    policies: tuple[str, ...]
    grid: tuple[str, ...]
    cell_note: str
    lockup_after_s: float | None = None
    horizon_s: float | None = None


VIEW_KEY = "oomsweep"  # mlflow.sharedViewState.<VIEW_KEY>: the runs-table view oomsweep sets up
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3's "model training" experiment kind
_HEADLINE_POLICIES = 8  # parent headline metrics shown as table columns for at most this many policies


VIEW_NAME = "oomsweep: lockup metrics and grid keys"  # how the view is listed in the runs tab's Views menu


def runs_view_path(experiment_id: str) -> str:
    """The UI path (after http://host:port) that opens an experiment on oomsweep's runs table.

    What MLflow 3.17.2's UI does (read in its built bundle, mlflow/server/js/build/static/js):
    the experiment page routes by a *workflow type* that is per browser: the URL parameter
    `workflowType`, else localStorage `mlflow.workflowType_v1` (written only by the sidebar's
    GenAI | Model training switch), else `genai`. The experiment tag `mlflow.experimentKind` is
    read only when a feature flag is off, and that flag is compiled on; `/server-info` carries no
    default either. So no tag, experiment field or server flag makes a bare click open the runs:
    this link asks for model training. The runs table's default columns are Source, Models and
    Dataset (no metric); `viewStateShareKey` applies the saved view oomsweep stores in the
    experiment tag mlflow.sharedViewState.oomsweep (see _view_state).
    """
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's column id: metrics.`lockup_probability`


def _view_state(policies: Sequence[str], grid: Sequence[str], created_ms: int) -> str:
    """The runs table oomsweep wants first: the parent's headline lockup_p/<policy>, each child's
    probability, interval and counts, its policy and grid keys; newest runs first.

    Stored as MLflow 3.17's saved-view envelope ({name, createdAt, updatedAt, state}), not as a
    bare state: the UI loads either through `viewStateShareKey`, but lists only envelopes in the
    runs tab's Views menu, where a user who came in by a bare click can pick it."""
    headline = [_column("metrics", mlflow_key(f"lockup_p/{p}")) for p in policies[:_HEADLINE_POLICIES]]
    metrics = [_column("metrics", m) for m in ("lockup_probability", "ci_low", "ci_high", "lockups", "n",
                                                "median_stall_s")]
    params = [_column("params", "policy"), *(_column("params", mlflow_key(c)) for c in grid)]
    columns = [*headline, *metrics, *params]
    # Widths: the whole key readable (the UI's default cuts `lockup_p/handoff_rfc_v2` to `lockup_p/hando`);
    # order: as listed here (the UI's own is alphabetical within metrics and within params).
    widths = {c: max(90, 7 * len(c.split("`")[1]) + 40) for c in columns}
    state = {"selectedColumns": columns, "columnOrder": columns, "columnWidths": widths,
             "orderByKey": "attributes.start_time", "orderByAsc": False}
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms, "updatedAt": created_ms,
                       "state": json.dumps(state)})


def view_state_of(tag_value: str) -> dict:
    """The runs-table state inside a mlflow.sharedViewState.* tag (envelope or bare state)."""
    value = json.loads(tag_value)
    return json.loads(value["state"]) if isinstance(value, dict) and "state" in value else value


HEADLINE_DIGITS = 4  # significant digits of the parent's headline metrics


def headline(value: float) -> float:
    """A parent-run headline number rounded to HEADLINE_DIGITS significant digits (0.1625, not
    0.16249999999): what the runs table shows is read, not recomputed. The children keep the
    exact summary, so the compare view and `oomsweep report` agree to the last digit."""
    v = float(value)
    return v if not math.isfinite(v) or v == 0 else float(f"{v:.{HEADLINE_DIGITS}g}")


def block_text(provenance: Mapping[str, Any], spec: SweepSpec | None) -> str:
    """'block K' of a fixed-replicate run (--replicate-block K), 'adaptive' otherwise; 'all blocks'
    without a sweep file (a calibrate sweep, `oomsweep log` of a bare dataset), whose rows are not
    selected by replicate block."""
    if spec is not None and not isinstance(spec.replicates, int):
        return "adaptive"
    reps = spec.replicates if spec is not None else 0
    start = int(provenance.get("replicate_start") or getattr(spec, "replicate_start", 0) or 0)
    return f"block {start // reps}" if reps else "all blocks"


def _written_ms(provenance: Mapping[str, Any]) -> int:
    """When the execution's rows were written (provenance), in ms since the epoch; else now."""
    import datetime as dt

    with contextlib.suppress(TypeError, ValueError):
        stamp = dt.datetime.fromisoformat(str(provenance.get("written_at")).replace("Z", "+00:00"))
        return int((stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).timestamp() * 1000)
    return int(time.time() * 1000)


def _when(provenance: Mapping[str, Any]) -> str:
    stamp = str(provenance.get("written_at") or "")
    return stamp[:16].replace("T", " ") if stamp else time.strftime("%Y-%m-%d %H:%M", time.gmtime())


def _fmt_key_value(column: str, value: Any) -> str:
    return f"{column}={_value(value)}"


def plan_log(summary: _Summary, spec: SweepSpec | None, provenance: Mapping[str, Any], *, sweep: str,
             execution_id: str, experiment: str, max_cell_runs: int) -> LogPlan:
    """What to log for one execution: pure over the scanned summary, the spec and the provenance."""
    grid = summary.grid
    declared = [p.label for p in spec.policies] if spec is not None else []
    table = summary.policy_table(declared)
    policies = list(table["policy"])
    cells = summary.cell_table()
    n_cells = summary.n_cells
    with_cells = n_cells * len(policies) <= max_cell_runs
    cell_note = (
        f"Per-cell runs: {n_cells * len(policies)}."
        if with_cells
        else f"Per-cell runs skipped: {n_cells} cells × {len(policies)} policies > max_cell_runs {max_cell_runs}."
    )
    model_versions = sorted(summary.model_versions)
    model_version = ",".join(model_versions) or str(provenance.get("model_version", ""))
    sweep_hash = (spec.sweep_hash if spec is not None else "") or provenance.get("sweep_hash", "")
    seed = spec.seed if spec is not None else provenance.get("seed", "")
    commit = next((provenance[k] for k in ("git_sha", "git_commit", "git") if provenance.get(k)), None) or git_sha()
    params = {
        "sweep": sweep,
        "execution_id": execution_id,
        "sweep_hash": str(sweep_hash),
        "grid": _grid_text(summary, spec),
        "grid_keys": ", ".join(grid) or "(none)",
        "cells": str(n_cells),
        "policies": ", ".join(policies),
        "replicates": _replicates_text(summary, spec),
        "model_version": model_version,
        "seed": str(seed),
        "max_cell_runs": str(max_cell_runs),
    }
    params = {k: _value(v) for k, v in params.items()}
    metrics: dict[str, float] = {
        "rows": summary.rows,
        "rows_ok": summary.rows_ok,
        FAILED_METRIC: summary.rows - summary.rows_ok,
        "cells": n_cells,
        "policies": len(policies),
        "rows_in_execution": summary.rows_in_execution,
        "sim_cpu_s": summary.sim_cpu_s(),
    }
    for r in table.to_dict("records"):  # headline: one number per policy, its interval beside it
        key = mlflow_key(f"lockup_p/{r['policy']}")
        metrics[key] = headline(r["lockup_probability"])
        metrics[f"{key}.ci_low"] = headline(r["ci_low"])
        metrics[f"{key}.ci_high"] = headline(r["ci_high"])
        metrics[f"{key}.n"] = int(r["n"])
    block = block_text(provenance, spec)
    covers = _covers(sweep, block, spec, provenance, summary)
    common = {TAG_EXECUTION: execution_id, TAG_SWEEP: sweep, **_source_tags(provenance.get("sweep_file"))}
    parent_tags = {
        **common,
        TAG_ROLE: "parent",
        "mlflow.note.content": _note(sweep, execution_id, table, covers, model_version, cell_note),
        "oomsweep.cell_runs": cell_note,
        "oomsweep.covers": covers,
    }
    if commit:
        parent_tags["mlflow.source.git.commit"] = str(commit)
    parent = _RunPlan(f"{sweep} {block} · {_when(provenance)}", parent_tags, params, metrics)
    lockup_after = horizon = None
    if spec is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            lockup_after = float(spec.base["lockup_after_s"])
        with contextlib.suppress(KeyError, TypeError, ValueError):
            horizon = float(spec.base["horizon_s"])
    return LogPlan(
        experiment=experiment,
        experiment_tags={"mlflow.experimentKind": EXPERIMENT_KIND,
                         f"mlflow.sharedViewState.{VIEW_KEY}": _view_state(policies, grid, _written_ms(provenance))},
        parent=parent,
        children=tuple(_child_plans(summary, table, cells, grid, common, with_cells)),
        table=table, cells=cells, policies=tuple(policies), grid=tuple(grid), cell_note=cell_note,
        lockup_after_s=lockup_after, horizon_s=horizon,
    )


def _covers(sweep: str, block: str, spec: SweepSpec | None, provenance: Mapping[str, Any], summary: _Summary) -> str:
    """Which rows the numbers cover, said the same way in the description, the plots and the CLI."""
    reps = _replicates_text(summary, spec)
    return f"sweep {sweep}, {block} (replicates {reps}), all stored rows of it: {summary.rows} rows"


def _source_tags(sweep_file: str | None = None) -> dict[str, str]:
    """The mlflow.source.* / mlflow.user tags the fluent API would set (MlflowClient sets none).

    The source is the sweep file when known (what was run), else the entry point, as MLflow does.
    """
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    entry = sys.argv[0] if sys.argv and sys.argv[0] else "oomsweep"
    if sweep_file:
        entry = str(sweep_file)
    return {
        "mlflow.user": user,
        "mlflow.source.name": os.path.abspath(entry) if os.path.exists(entry) else entry,
        "mlflow.source.type": "LOCAL",
    }


def _replicates_text(summary: _Summary, spec: SweepSpec | None) -> str:
    if spec is not None:
        r = spec.replicates
        if isinstance(r, int):
            start = spec.replicate_start
            return str(r) if not start else f"{r} (block {start // r}: replicates {start}..{start + r - 1})"
        return f"adaptive(ci_half_width={r.ci_half_width}, min={r.min}, max={r.max}, batch={r.batch})"
    return summary.replicates_text()


def _grid_text(summary: _Summary, spec: SweepSpec | None) -> str:
    if spec is not None:
        parts = [f"{k}={len(v)}" for k, v in spec.grid.items()]
        if spec.sample is not None and spec.sample.n:
            parts.append(f"sample={spec.sample.method}:{spec.sample.n}({','.join(spec.sample.params)})")
        return ", ".join(parts) or "(single cell)"
    return summary.grid_text()


_EXPERIMENT_ID_SLOT = "{experiment_id}"  # in the planned note; _write fills it in once the experiment is known


def _note(sweep: str, execution_id: str, table: pd.DataFrame, covers: str, model_version: str,
          cell_note: str) -> str:
    """Run description (mlflow.note.content): one line of context and the per-policy table exactly as
    `oomsweep report --format text` prints it (a fixed-width block: columns stay apart in the UI)."""
    text = (f"**{covers}**; execution `{execution_id}`, model {model_version}. {cell_note}\n\n"
            f"```\n{format_text(table)}\n```\n\n"
            f"The runs table with these numbers as columns: *Views → {VIEW_NAME}* above it, or the "
            f"link `{runs_view_path(_EXPERIMENT_ID_SLOT)}` after the UI's http://host:port.\n")
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 1] + "…"


def _write_artifacts(directory: Path, plan: LogPlan, curves: Mapping[str, KaplanMeier], spec: SweepSpec | None,
                     provenance: Mapping[str, Any]) -> None:
    """Everything the parent run carries as files, written locally then uploaded in one call."""
    if spec is not None and spec.source_text:
        (directory / "sweep.yaml").write_text(spec.source_text, encoding="utf-8")
    if provenance:
        (directory / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))
    table, cells = plan.table, plan.cells
    table.to_csv(directory / "policy_table.csv", index=False)
    (directory / "policy_table.txt").write_text(format_text(table) + "\n", encoding="utf-8")
    (directory / "policy_table.html").write_text(
        table.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="–"), encoding="utf-8")
    covers = plan.parent.tags.get("oomsweep.covers", "")
    write_plots(directory / "plots", table, cells, curves, plan.grid, plan.policies, plan.lockup_after_s,
                plan.horizon_s, covers)


def _short_keys(grid: Sequence[str]) -> dict[str, str]:
    """Grid columns by their last key-path segment where that is unambiguous (for run names)."""
    last = [c.rsplit(".", 1)[-1] for c in grid]
    return {c: (s if last.count(s) == 1 else c) for c, s in zip(grid, last)}


# The order a child's metrics are logged in: MLflow 3.17's compare view plots the first metric the
# runs share, in the store's order (which is this one) on its parallel-coordinates axis; it took
# `n` when SUMMARY_COLUMNS' order was used.
_CHILD_METRIC_ORDER = ("lockup_probability", "ci_low", "ci_high",
                       *(m for m in (*METRICS, FAILED_METRIC) if m not in ("lockup_probability", "ci_low", "ci_high")))


def _child_plans(summary: _Summary, table: pd.DataFrame, cells: pd.DataFrame, grid: Sequence[str],
                 common: Mapping[str, str], with_cells: bool) -> list[_RunPlan]:
    plans = []
    short = _short_keys(grid)
    for r in table.to_dict("records"):
        policy = r["policy"]
        name, options = _policy_info(summary, policy)
        params = {"policy": policy}
        if name is not None:
            params["policy_name"] = name
        params.update({mlflow_key(f"option.{k}"): _value(v) for k, v in sorted(options.items())})
        if options:
            params["policy_options"] = _value(json.dumps(options, sort_keys=True))
        plans.append(_RunPlan(policy, {**common, TAG_ROLE: "policy", TAG_CHILD: f"policy:{policy}"}, params,
                              {m: r[m] for m in _CHILD_METRIC_ORDER}))
    if with_cells:
        for r in cells.to_dict("records"):
            params = {mlflow_key(c): _value(r[c]) for c in grid}
            params["policy"] = r["policy"]
            tags = {**common, TAG_ROLE: "cell", TAG_CELL: str(r["cell_id"]), TAG_CHILD: f"cell:{r['cell_id']}:{r['policy']}",
                    "oomsweep.cell_index": str(int(r["cell_index"]))}
            keys = " ".join(_fmt_key_value(short[c], r[c]) for c in grid)
            name = f"{r['policy']} · cell {int(r['cell_index'])}" + (f": {keys}" if keys else "")
            plans.append(_RunPlan(name[:250], tags, params, {m: r[m] for m in _CHILD_METRIC_ORDER}))
    return plans


# --------------------------------------------------------------------------------------------------
# Store calls


def _create_run_logged(client: Any, experiment_id: str, plan: _RunPlan) -> str:
    """create_run + one log_batch + set_terminated: the whole cost of a child run."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    run = client.create_run(experiment_id, start_time=now, tags=dict(plan.tags), run_name=plan.name)
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in plan.metrics.items()],
        params=[Param(k, v) for k, v in plan.params.items()],
        synchronous=True,
    )
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _child_threads(uri: str, requested: int | None) -> int:
    """How many threads log child runs: 1 for SQLite, else `requested` (default 8) but never more
    than MLflow's HTTP connection pool holds (MLFLOW_HTTP_POOL_MAXSIZE, default 10).

    SQLite: every store call is ~15-20 ms of SQLAlchemy work under the GIL plus an fsync'd commit,
    and writers take the database lock in turn, so threads only add lock waits (measured: 4 threads
    slower than 1). A server: each call waits on the network and the server, so calls overlap. More
    threads than pooled connections would not add throughput: urllib3 opens a fresh connection for
    each extra request, logs "Connection pool is full, discarding connection" and drops it after.
    Raising MLFLOW_HTTP_POOL_MAXSIZE (read by MLflow when it first builds its HTTP session in the
    process) lets `requested` go higher; oomsweep itself changes no pool, socket or env setting.
    """
    if urlsplit(uri).scheme.startswith("sqlite"):
        return 1
    from mlflow.environment_variables import MLFLOW_HTTP_POOL_MAXSIZE

    try:
        pool = int(MLFLOW_HTTP_POOL_MAXSIZE.get())
    except (TypeError, ValueError):
        pool = 10
    return max(1, min(requested or _SERVER_THREADS, pool))


def _log_children(client: Any, experiment_id: str, plans: Sequence[_RunPlan], threads: int,
                  done: Callable[[], None] | None = None) -> int:
    """Log child runs concurrently; the first failure cancels the rest and is re-raised. `done` is
    called after each run (from the logging threads)."""
    if not plans:
        return 0

    def one(plan: _RunPlan) -> str:
        run_id = _create_run_logged(client, experiment_id, plan)
        if done is not None:
            done()
        return run_id

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(plans))),
                            thread_name_prefix="oomsweep-mlflow") as pool:
        futures = [pool.submit(one, p) for p in plans]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()
    return len(plans)


def _artifact_location(uri: str, name: str) -> str | None:
    """For a SQLite store: <directory of the .db>/mlruns/<experiment>, next to the database.

    MLflow's own default is ./mlruns under the *current* directory, which scatters artifacts
    wherever oomsweep happens to be started when the database lives elsewhere. With the default
    URI (sqlite:///mlflow.db in cwd) both are the same directory. Other stores: the server decides.
    """
    parts = urlsplit(uri)
    if not parts.scheme.startswith("sqlite") or parts.path in ("", "/", "/:memory:"):
        return None
    db = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"
    return str((db.parent if db.is_absolute() else Path.cwd() / db.parent).resolve() / "mlruns" / slug)


def _experiment_id(client: Any, name: str, artifact_location: str | None = None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as e:  # created meanwhile by someone else
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise e
    if exp.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}`) or set mlflow.experiment to another name"
        )
    return exp.experiment_id


def _search_all(client: Any, experiment_ids: str | Sequence[str], filter_string: str) -> list:
    ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
    runs, token = [], None
    while True:
        page = client.search_runs(ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _existing_parents(client: Any, experiment_ids: Sequence[str], sweep: str, execution_id: str) -> list:
    """Parent runs of this execution in any of the experiments (it may have been logged under
    another experiment name, e.g. by `oomsweep log` without the sweep file)."""
    found = []
    for i in range(0, len(experiment_ids), 100):
        found += _search_all(
            client, list(experiment_ids[i : i + 100]),
            f"tags.`{TAG_EXECUTION}` = '{execution_id}' and tags.`{TAG_ROLE}` = 'parent' "
            f"and tags.`{TAG_SWEEP}` = '{sweep}'",
        )
    return found


def active_experiment_ids(client: Any) -> list[str]:
    """Ids of every active experiment in the store, all pages (search_experiments' default filter
    is active ones only): where an execution's runs may be, whatever experiment name logged them."""
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def _delete_attempt(client: Any, experiment_id: str, run_id: str) -> None:
    """Soft-delete an unfinished parent and its children (left by an interrupted attempt)."""
    for child in _search_all(client, experiment_id, f"tags.`{PARENT_TAG}` = '{run_id}'"):
        client.delete_run(child.info.run_id)
    client.delete_run(run_id)


def _resumable(client: Any, earlier: Sequence[Any], plan: LogPlan) -> tuple[Any, set[str]]:
    """An unfinished parent of this execution whose logging can be completed in place: it recorded
    the same row counts as the plan now made, so its finished child runs hold the numbers
    that would be logged again. Its unfinished children are deleted (they are redone); returns the
    parent (or None) and the TAG_CHILD keys of its finished children."""
    for run in earlier:
        m = run.data.metrics
        if (m.get("rows") != float(plan.parent.metrics["rows"])
                or m.get("rows_in_execution") != float(plan.parent.metrics["rows_in_execution"])):
            continue
        done: set[str] = set()
        for child in _search_all(client, run.info.experiment_id, f"tags.`{PARENT_TAG}` = '{run.info.run_id}'"):
            key = child.data.tags.get(TAG_CHILD)
            if child.info.status == "FINISHED" and key and key not in done:
                done.add(key)
            else:  # killed between create and terminate, or a second copy: redone below
                client.delete_run(child.info.run_id)
        return run, done
    return None, set()


def _log_dataset(client: Any, run_id: str, cells: pd.DataFrame, source: str, name: str) -> None:
    """Record the per-cell summary (not the rows) as the run's input, pointing at the Parquet data."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ambiguous source" for local paths; integer-column hint
        dataset = mlflow.data.from_pandas(cells, source=source, name=name, targets="lockup_probability")
        entity = dataset._to_mlflow_entity()
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", DATASET_CONTEXT)])])


# --------------------------------------------------------------------------------------------------


class StoreWarmup:
    """Open the MLflow store in a background thread while the sweep runs: import MLflow's store
    and, on a new sqlite file, create its tables (MLflow's alembic migrations).

    Why: on a fresh store that is most of the logging time of a small sweep (the quick sweep,
    loaded 2-core machine: 39 s of 71 s in log_sweep, benchmarks/bench_quick_logging.py), and the
    driver only waits on Ray meanwhile. Nothing is written but MLflow's empty tables; any failure
    is kept for log_sweep to ignore (it opens the store again and reports a failure itself).
    """

    def __init__(self, tracking_uri: str | None) -> None:
        self.new_db: Path | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        try:
            self.uri = resolve_tracking_uri(tracking_uri)
        except TrackingError as e:
            self.uri, self.error = "", e
            self._thread = None
            return
        self.new_db = _new_sqlite_store(self.uri)
        self._thread = threading.Thread(target=self._open, name="oomsweep-mlflow-warmup", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        started = time.monotonic()
        try:
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            from mlflow import MlflowClient

            if urlsplit(self.uri).scheme.startswith("sqlite"):  # a server is asked nothing before logging
                with _quiet_mlflow_setup():
                    MlflowClient(tracking_uri=self.uri).search_experiments(max_results=1)
        except BaseException as e:  # noqa: BLE001 - kept; log_sweep reports its own failure
            self.error = e
        finally:
            self.seconds = time.monotonic() - started

    def wait(self) -> bool:
        """Block until the store is open; True when it was done in the background (no error)."""
        if self._thread is not None:
            self._thread.join()
        return self._thread is not None and self.error is None


def log_sweep(
    output: Path,
    sweep: str,
    *,
    tracking_uri: str | None,
    spec: SweepSpec | None = None,
    execution_id: str,
    max_cell_runs: int | None = None,
    experiment: str | None = None,
    threads: int | None = None,
    say: Callable[[str], None] | None = None,
    warmup: StoreWarmup | None = None,
) -> TrackingResult:
    """Log one execution of a sweep from its Parquet rows; a no-op if that execution is logged.

    plan_log() decides what to write (pure), _write() writes it. `say`, when given, receives a few
    plain progress lines (first use of a sqlite store, child runs done every 5 s).

    The summaries cover the sweep's stored rows at logging time (all executions: a resumed sweep's
    result is their union), restricted to the spec's policies and replicate numbers when a spec is
    known; metric `rows_in_execution` counts the rows this execution wrote. Without `spec`, the
    sweep file named in this execution's Parquet provenance is used if it still has the same hash.
    Experiment: `experiment`, else spec.mlflow.experiment, else the sweep name; an execution already
    logged under another experiment is found there. max_cell_runs: else spec.mlflow.max_cell_runs,
    else 2000; per-cell child runs are logged only while cells × policies <= max_cell_runs.
    `threads`: concurrent child-run loggers for a server (default 8, at most MLflow's HTTP pool
    size, MLFLOW_HTTP_POOL_MAXSIZE); a SQLite store is written serially. `warmup`: a StoreWarmup
    started on the same URI while the sweep ran (its table creation is then said as done).
    Raises TrackingError for any failure to record (nothing half-logged is left FINISHED), and
    ValueError for a malformed sweep name or execution_id.
    """
    started = time.monotonic()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not _SWEEP_NAME.match(sweep or ""):
        raise ValueError(f"sweep must match {_SWEEP_NAME.pattern}, got {sweep!r}")
    if not _EXECUTION_ID.match(execution_id or ""):
        raise ValueError(f"execution_id must match {_EXECUTION_ID.pattern}, got {execution_id!r}")
    uri = resolve_tracking_uri(tracking_uri)
    output = Path(output)
    provenance = _provenance(output, sweep, execution_id)
    if spec is None:
        spec = _spec_from_provenance(provenance)
    experiment = experiment or (spec.mlflow.experiment if spec is not None else "") or sweep
    if max_cell_runs is None:
        max_cell_runs = spec.mlflow.max_cell_runs if spec is not None else 2000
    threads = _child_threads(uri, threads)
    if say is not None:
        say(f"MLflow: summarising the stored rows of {sweep} (phase 1 of 3)")
    summary = _scan(output, sweep, spec, execution_id)
    if summary.rows == 0:
        raise TrackingError(f"nothing to log: no rows of sweep {sweep!r} under {output}")
    # What to log first: nothing is written to the store until it is known to compute.
    plan = plan_log(summary, spec, provenance, sweep=sweep, execution_id=execution_id, experiment=experiment,
                    max_cell_runs=max_cell_runs)
    curves = {p: summary.policy_group(p).survival() for p in plan.policies}
    del summary
    if warmup is not None and warmup.uri != uri:
        warmup = None
    return _write(plan, curves, uri=uri, output=output, sweep=sweep, execution_id=execution_id, spec=spec,
                  provenance=provenance, threads=threads, started=started, say=say, warmup=warmup)


def _new_sqlite_store(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI that does not exist yet (MLflow will create its tables)."""
    parts = urlsplit(uri)
    if not parts.scheme.startswith("sqlite") or parts.path in ("", "/", "/:memory:"):
        return None
    db = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
    db = db if db.is_absolute() else Path.cwd() / db
    return None if db.exists() and db.stat().st_size else db


@contextlib.contextmanager
def _quiet_mlflow_setup() -> Iterator[None]:
    """MLflow's INFO lines about creating and migrating its tables, and alembic's, silenced: the
    caller says it once in plain words."""
    import logging

    names = ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store", "alembic", "alembic.runtime.migration")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


class _ChildProgress:
    """'MLflow: 120/340 child runs' at most every `every_s` seconds."""

    def __init__(self, total: int, say: Callable[[str], None] | None, every_s: float = 5.0) -> None:
        self.total, self.say, self.every_s = total, say, every_s
        self.done = 0
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.done += 1
            now = time.monotonic()
            if self.say is not None and self.done < self.total and now - self.last >= self.every_s:
                self.last = now
                rate = self.done / max(now - self.started, 1e-9)
                self.say(f"MLflow: {self.done}/{self.total} child runs ({rate:.0f}/s, "
                         f"~{(self.total - self.done) / rate:.0f} s left)")


def _write(plan: LogPlan, curves: Mapping[str, KaplanMeier], *, uri: str, output: Path, sweep: str,
           execution_id: str, spec: SweepSpec | None, provenance: Mapping[str, Any], threads: int,
           started: float, say: Callable[[str], None] | None,
           warmup: StoreWarmup | None = None) -> TrackingResult:
    """The store calls of a LogPlan: experiment, parent, artifacts, dataset, children, parent FINISHED."""
    _check_reachable(uri)
    new_db = _new_sqlite_store(uri)
    if warmup is not None and warmup.new_db is not None:
        warmed = warmup.wait()
        if warmed and say is not None:
            say(f"MLflow: created the tracking database {warmup.new_db} while the sweep ran "
                f"(first use of this store: {warmup.seconds:.0f} s)")
        new_db = None if warmed else new_db
    elif warmup is not None:
        warmup.wait()
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    if new_db is not None and say is not None:
        say(f"MLflow: creating the tracking database {new_db} (first use of this store; takes a few seconds)")
    with _talking_to(uri, "opening the store"), _quiet_mlflow_setup():
        client = MlflowClient(tracking_uri=uri)
        experiment_ids = active_experiment_ids(client)
    with _talking_to(uri, "looking up earlier logging of this execution"):
        earlier = _existing_parents(client, experiment_ids, sweep, execution_id)
        for run in earlier:
            if run.info.status == "FINISHED":
                exp = client.get_experiment(run.info.experiment_id)
                return TrackingResult(uri, exp.name, exp.experiment_id, run.info.run_id,
                                      already_logged=True, seconds=time.monotonic() - started,
                                      ui_path=runs_view_path(exp.experiment_id))
        # A driver killed while logging left a parent RUNNING (or FAILED): complete that one (never a
        # second parent for one execution); any other unfinished attempt is deleted.
        resumed, children_done = _resumable(client, earlier, plan)
        for run in earlier:
            if resumed is None or run.info.run_id != resumed.info.run_id:
                _delete_attempt(client, run.info.experiment_id, run.info.run_id)
    with _talking_to(uri, f"creating experiment {plan.experiment!r}"):
        if resumed is not None:  # the experiment the unfinished parent is in
            experiment_id = resumed.info.experiment_id
            experiment = client.get_experiment(experiment_id).name
        else:
            experiment = plan.experiment
            experiment_id = _experiment_id(client, experiment, _artifact_location(uri, experiment))
        for key, value in plan.experiment_tags.items():
            client.set_experiment_tag(experiment_id, key, value)

    with tempfile.TemporaryDirectory(prefix="oomsweep-mlflow-") as tmp:
        if say is not None:
            say("MLflow: parent run, tables and plots (phase 2 of 3)")
        _write_artifacts(Path(tmp), plan, curves, spec, provenance)
        parent_id = None
        try:
            with _talking_to(uri, "creating the parent run"):
                now = int(time.time() * 1000)
                parent_tags = dict(plan.parent.tags)
                parent_tags["mlflow.note.content"] = parent_tags["mlflow.note.content"].replace(
                    _EXPERIMENT_ID_SLOT, str(experiment_id))
                if resumed is None:
                    parent = client.create_run(experiment_id, start_time=now, tags=parent_tags,
                                               run_name=plan.parent.name)
                    parent_id = parent.info.run_id
                    have_params: Mapping[str, str] = {}
                else:
                    parent_id = resumed.info.run_id
                    have_params = resumed.data.params  # params are immutable: only the missing ones
                    for k, v in parent_tags.items():
                        if resumed.data.tags.get(k) != v:
                            client.set_tag(parent_id, k, v)
                client.log_batch(parent_id,
                                 metrics=[Metric(k, float(v), now, 0) for k, v in plan.parent.metrics.items()],
                                 params=[Param(k, v) for k, v in plan.parent.params.items() if k not in have_params],
                                 synchronous=True)
            with _talking_to(uri, "uploading artifacts"):
                client.log_artifacts(parent_id, tmp)
            if resumed is None or not resumed.inputs.dataset_inputs:
                with _talking_to(uri, "recording the dataset"):
                    source = sweep_dir(output, sweep).resolve()
                    _log_dataset(client, parent_id, plan.cells, str(source), f"{sweep}.cells")
            children = [dataclasses.replace(c, tags={**c.tags, PARENT_TAG: parent_id}) for c in plan.children
                        if c.tags[TAG_CHILD] not in children_done]
            if say is not None:
                say(f"MLflow: logging {len(children)} child runs (phase 3 of 3)")
            progress = _ChildProgress(len(children), say)
            with _talking_to(uri, "logging child runs"):
                _log_children(client, experiment_id, children, threads, progress)
            with _talking_to(uri, "finishing the parent run"):
                client.set_terminated(parent_id, "FINISHED")
        except BaseException:
            if parent_id is not None:  # best effort: leave it visibly unfinished; the next call redoes it
                with contextlib.suppress(Exception):
                    client.set_terminated(parent_id, "FAILED")
            raise

    cell_runs = sum(1 for c in plan.children if c.tags.get(TAG_ROLE) == "cell")
    notes = (plan.cell_note,) if resumed is None else (
        plan.cell_note, f"completed the unfinished parent run {parent_id}: {len(children_done)} child runs were "
                        f"already logged, {len(children)} added")
    return TrackingResult(
        uri, experiment, experiment_id, parent_id,
        policy_runs=len(plan.policies),
        cell_runs=cell_runs,
        seconds=time.monotonic() - started,
        notes=notes,
        resumed=resumed is not None,
        ui_path=runs_view_path(experiment_id),
    )

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
  an interrupted attempt is deleted (with its children) and logged again.
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
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_EXCEPTION
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from sweeps.analysis import plots
from sweeps.analysis.stats import survival, wilson
from sweeps.errors import TrackingError
from sweeps.storage import schema
from sweeps.storage.dataset import list_files, open_dataset, read_provenance, sweep_dir

if TYPE_CHECKING:  # the spec module is only needed for its type here
    from sweeps.spec.model import SweepSpec

__all__ = [
    "TrackingError",
    "TrackingResult",
    "log_sweep",
    "resolve_tracking_uri",
    "grid_columns",
    "mlflow_key",
    "METRICS",
    "TAG_EXECUTION",
    "TAG_SWEEP",
    "TAG_ROLE",
]

TAG_EXECUTION = "oomsweep.execution_id"
TAG_SWEEP = "oomsweep.sweep"
TAG_ROLE = "oomsweep.role"  # "parent" | "policy" | "cell"
TAG_CELL = "oomsweep.cell_id"
PARENT_TAG = "mlflow.parentRunId"
DATASET_CONTEXT = "oomsweep.cells"

# Same names in every run (parent table, policy children, cell children) so the compare view lines up.
METRICS = (
    "lockup_probability",
    "ci_low",
    "ci_high",
    "n",
    "lockups",
    "median_stall_s",
    "p99_stall_s",
    "mean_kills",
    "handed_over_rate",
)
FAILED_METRIC = "failed_rows"  # rows with status != "ok": not in n, but worth seeing next to it

# Columns of a sweep row that are not grid/sample parameters: everything the schema declares.
_ROW_COLUMNS = frozenset(
    f.name
    for f in (*schema.PARTITION_FIELDS, *schema.IDENTITY_FIELDS, schema.SCENARIO_FIELD,
              *schema.OUTCOME_FIELDS, *schema.STATUS_FIELDS)
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
    notes: tuple[str, ...] = field(default_factory=tuple)


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
    if getattr(spec, "sample", None) is not None:
        keys += [k for k in spec.sample.params if k not in keys]
    ordered = [param_column(k) for k in keys]
    return [c for c in ordered if c in names] + [c for c in present if c not in ordered]


# --------------------------------------------------------------------------------------------------
# Streaming summary of the stored rows (backfill with `oomsweep log` reads nothing else)


_MISSING = object()  # None and NaN as one value, as pandas' nunique(dropna=False) counts them
_SCAN_BATCH_ROWS = 65_536


@dataclass
class _Group:
    """Running totals of one (cell, policy): counts, sums and the ok rows' max_stall_s."""

    rows: int = 0
    ok: int = 0
    lockups: int = 0
    handed_over: int = 0
    kills_sum: float = 0.0
    kills_n: int = 0
    stalls: list = field(default_factory=list)  # float64 arrays, one per batch that had ok rows

    def add(self, other: "_Group") -> None:
        self.rows += other.rows
        self.ok += other.ok
        self.lockups += other.lockups
        self.handed_over += other.handed_over
        self.kills_sum += other.kills_sum
        self.kills_n += other.kills_n
        self.stalls += other.stalls

    def stall_values(self) -> np.ndarray:
        return np.concatenate(self.stalls) if self.stalls else np.empty(0)

    def metrics(self) -> dict[str, float]:
        """The METRICS of this group's rows; only status == "ok" rows count (exact: counts and integer kills)."""
        n, k = self.ok, self.lockups
        prop = wilson(k, n)
        stalls = self.stall_values()
        stalls = np.sort(stalls[~np.isnan(stalls)])  # as stats.quantile: NaN ignored, then sorted
        return {
            "lockup_probability": prop.p,
            "ci_low": prop.low,
            "ci_high": prop.high,
            "n": float(n),
            "lockups": float(k),
            "median_stall_s": _sorted_quantile(stalls, 0.5),
            "p99_stall_s": _sorted_quantile(stalls, 0.99),
            "mean_kills": (self.kills_sum / self.kills_n if self.kills_n else math.nan) if n else math.nan,
            "handed_over_rate": self.handed_over / n if n else math.nan,
            FAILED_METRIC: float(self.rows - n),
        }


def _sorted_quantile(xs: np.ndarray, q: float) -> float:
    """stats.quantile over an already sorted, NaN-free float array, with the same float arithmetic
    (no Python list of every value)."""
    if not len(xs):
        return math.nan
    pos = q * (len(xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(xs) - 1)
    frac = pos - i
    lo, hi = float(xs[i]), float(xs[j])
    return lo + (hi - lo) * frac if frac else lo


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
    groups: dict = field(default_factory=dict)  # (cell_id, policy) -> _Group
    cell_first: pd.DataFrame | None = None  # per cell_id: first non-null cell_index and grid values
    distinct: dict = field(default_factory=dict)  # grid column -> set of values (for _grid_text)

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

    def policy_group(self, policy: str) -> _Group:
        total = _Group()
        for (_, p), g in sorted(self.groups.items()):
            if p == policy:
                total.add(g)
        return total

    def policy_table(self) -> pd.DataFrame:
        """One row per policy, sorted by policy: the policy columns, METRICS and failed_rows."""
        records = [{"policy": p, **self.policy_group(p).metrics()} for p in self.policies_found]
        return pd.DataFrame.from_records(records, columns=["policy", *METRICS, FAILED_METRIC])

    def cell_table(self) -> pd.DataFrame:
        """Per (cell, policy): cell_index, grid values and METRICS; the dataset recorded with log_input."""
        records = [{"cell_id": c, "policy": p, **g.metrics()} for (c, p), g in sorted(self.groups.items())]
        table = pd.DataFrame.from_records(records, columns=["cell_id", "policy", *METRICS, FAILED_METRIC])
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
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = list_files(output, sweep)
    names: dict[str, None] = {}
    for path in files:
        names.update(dict.fromkeys(pq.read_schema(path).names))
    if files:
        names = {"sweep": None, "policy": None, **names}  # partition columns, first as read_sweep puts them
    summary = _Summary(names=list(names), grid=_grid_of(list(names), spec))
    if not files:
        return summary
    wanted = ["policy", "cell_id", "cell_index", "status", "lockup", "max_stall_s", "kills", "handed_over",
              "model_version", "execution_id", "wall_s", "policy_name", "policy_options", *summary.grid]
    columns = [c for c in dict.fromkeys(wanted) if c in names and c != "sweep"]
    expr = None
    if spec is not None:
        expr = pc.field("policy").isin([p.label for p in spec.policies])
        if isinstance(spec.replicates, int) and "replicate" in names:
            start = getattr(spec, "replicate_start", 0)  # this run's block (--replicate-block), else 0
            expr &= (pc.field("replicate") >= start) & (pc.field("replicate") < start + spec.replicates)
    dataset = open_dataset(output, sweep, files)
    first_cols = [c for c in ["cell_index", *summary.grid] if c in columns]
    # One file at a time, in the dataset's order: a dataset-wide scan reads files ahead while the
    # batches are summarised (measured: most of the dataset's decoded columns live at once).
    for fragment in dataset.get_fragments(filter=expr):
        for batch in fragment.to_batches(schema=dataset.schema, columns=columns, filter=expr,
                                         batch_size=_SCAN_BATCH_ROWS, use_threads=False):
            if batch.num_rows == 0:
                continue
            frame = batch.to_pandas()
            for col in ("policy", "status", "cell_id"):
                if col in frame.columns:
                    frame[col] = frame[col].astype(str)
            _scan_batch(summary, frame, first_cols, execution_id)
    return summary


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
    ok = frame[ok_mask]
    by_group = frame.groupby(["cell_id", "policy"], sort=False, observed=True).size()
    for key, size in by_group.items():
        summary.groups.setdefault(key, _Group()).rows += int(size)
    if len(ok):
        lockup = ok["lockup"].astype(bool)
        handed = ok["handed_over"].astype(bool)
        kills = ok["kills"].astype(float)
        stall = ok["max_stall_s"].astype(float)
        parts = pd.DataFrame({"cell_id": ok["cell_id"], "policy": ok["policy"], "lockup": lockup,
                              "handed": handed, "kills": kills.fillna(0.0), "kills_n": kills.notna(),
                              "stall": stall})
        for key, g in parts.groupby(["cell_id", "policy"], sort=False, observed=True):
            group = summary.groups[key]
            group.ok += len(g)
            group.lockups += int(g["lockup"].sum())
            group.handed_over += int(g["handed"].sum())
            group.kills_sum += float(g["kills"].sum())
            group.kills_n += int(g["kills_n"].sum())
            group.stalls.append(g["stall"].to_numpy(dtype=float, copy=True))
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


def _order_policies(found: Sequence[str], spec: SweepSpec | None) -> list[str]:
    declared = [p.label for p in spec.policies] if spec is not None else []
    return [p for p in declared if p in found] + sorted(p for p in found if p not in declared)


def _git_sha() -> str | None:
    """HEAD of the checkout this package runs from, if it is one (and has a commit)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


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
            start = getattr(spec, "replicate_start", 0)
            return str(r) if not start else f"{r} (block {start // r}: replicates {start}..{start + r - 1})"
        return f"adaptive(ci_half_width={r.ci_half_width}, min={r.min}, max={r.max}, batch={r.batch})"
    return summary.replicates_text()


def _grid_text(summary: _Summary, spec: SweepSpec | None) -> str:
    if spec is not None:
        parts = [f"{k}={len(v)}" for k, v in spec.grid.items()]
        if getattr(spec, "sample", None) is not None and spec.sample.n:
            parts.append(f"sample={spec.sample.method}:{spec.sample.n}({','.join(spec.sample.params)})")
        return ", ".join(parts) or "(single cell)"
    return summary.grid_text()


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _note(sweep: str, execution_id: str, table: pd.DataFrame, counts: Mapping[str, int],
          model_version: str, cell_note: str) -> str:
    """Run description (mlflow.note.content): one line of context and the per-policy table."""
    lines = [
        f"**oomsweep `{sweep}`**, execution `{execution_id}`, model {model_version}: "
        f"{counts['cells']} cells × {counts['policies']} policies, {counts['rows']} rows "
        f"({counts['failed']} failed). {cell_note}",
        "",
        "| policy | n | lockups | P(lockup) | 95 % CI | median stall s | p99 stall s | mean kills | handed over |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.policy} | {int(r.n)} | {int(r.lockups)} | {_fmt(r.lockup_probability)} | "
            f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | {_fmt(r.median_stall_s)} | {_fmt(r.p99_stall_s)} | "
            f"{_fmt(r.mean_kills)} | {_fmt(r.handed_over_rate)} |"
        )
    text = "\n".join(lines)
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 1] + "…"


def _write_artifacts(directory: Path, table: pd.DataFrame, cells: pd.DataFrame,
                     stalls_by_policy: Mapping[str, np.ndarray], grid: Sequence[str],
                     policies: Sequence[str], spec: SweepSpec | None, provenance: Mapping[str, Any]) -> None:
    """Everything the parent run carries as files, written locally then uploaded in one call."""
    if spec is not None and getattr(spec, "source_text", ""):
        (directory / "sweep.yaml").write_text(spec.source_text, encoding="utf-8")
    if provenance:
        (directory / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))
    table.to_csv(directory / "policy_table.csv", index=False)
    (directory / "policy_table.html").write_text(
        table.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="–"), encoding="utf-8")

    plot_dir = directory / "plots"
    plots.save_png(plots.lockup_probability_figure(table), plot_dir / "lockup_probability.png")
    varying = [c for c in grid if cells[c].nunique(dropna=True) > 1]
    if len(varying) >= 2:
        x, y = varying[0], varying[1]
        plots.save_png(plots.heatmap_figure(cells, x, y, policies), plot_dir / "lockup_heatmap.png")
    stalls = pd.Series(np.concatenate([stalls_by_policy[p] for p in policies]) if policies else [], dtype=float)
    top = float(stalls.max()) if len(stalls) and not math.isnan(stalls.max()) else 0.0
    thresholds = np.linspace(0.0, top * 1.02 if top > 0 else 1.0, 241)
    curves = {p: survival(stalls_by_policy[p].tolist(), thresholds) for p in policies}
    lockup_after = None
    if spec is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            lockup_after = float(spec.base["lockup_after_s"])
    plots.save_png(plots.survival_figure(curves, lockup_after), plot_dir / "stall_survival.png")


def _child_plans(summary: _Summary, table: pd.DataFrame, cells: pd.DataFrame, grid: Sequence[str],
                 policies: Sequence[str], common: Mapping[str, str], with_cells: bool) -> list[_RunPlan]:
    plans = []
    for r in table.to_dict("records"):
        policy = r["policy"]
        name, options = _policy_info(summary, policy)
        params = {"policy": policy}
        if name is not None:
            params["policy_name"] = name
        params.update({mlflow_key(f"option.{k}"): _value(v) for k, v in sorted(options.items())})
        if options:
            params["policy_options"] = _value(json.dumps(options, sort_keys=True))
        plans.append(_RunPlan(policy, {**common, TAG_ROLE: "policy"}, params,
                              {m: r[m] for m in (*METRICS, FAILED_METRIC)}))
    if with_cells:
        for r in cells.to_dict("records"):
            params = {mlflow_key(c): _value(r[c]) for c in grid}
            params["policy"] = r["policy"]
            tags = {**common, TAG_ROLE: "cell", TAG_CELL: str(r["cell_id"]),
                    "oomsweep.cell_index": str(int(r["cell_index"]))}
            plans.append(_RunPlan(f"{r['policy']} · cell {int(r['cell_index'])}", tags, params,
                                  {m: r[m] for m in (*METRICS, FAILED_METRIC)}))
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


def _log_children(client: Any, experiment_id: str, plans: Sequence[_RunPlan], threads: int) -> int:
    """Log child runs concurrently; the first failure cancels the rest and is re-raised."""
    if not plans:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(plans))),
                            thread_name_prefix="oomsweep-mlflow") as pool:
        futures = [pool.submit(_create_run_logged, client, experiment_id, p) for p in plans]
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


def _active_experiment_ids(client: Any) -> list[str]:
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
) -> TrackingResult:
    """Log one execution of a sweep from its Parquet rows; a no-op if that execution is logged.

    The summaries cover the sweep's stored rows at logging time (all executions: a resumed sweep's
    result is their union), restricted to the spec's policies and replicate numbers when a spec is
    known; metric `rows_in_execution` counts the rows this execution wrote. Without `spec`, the
    sweep file named in this execution's Parquet provenance is used if it still has the same hash.
    Experiment: `experiment`, else spec.mlflow.experiment, else the sweep name; an execution already
    logged under another experiment is found there. max_cell_runs: else spec.mlflow.max_cell_runs,
    else 2000; per-cell child runs are logged only while cells × policies <= max_cell_runs.
    `threads`: concurrent child-run loggers for a server (default 8, at most MLflow's HTTP pool
    size, MLFLOW_HTTP_POOL_MAXSIZE); a SQLite store is written serially.
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
    spec_mlflow = getattr(spec, "mlflow", None)
    experiment = experiment or getattr(spec_mlflow, "experiment", None) or sweep
    if max_cell_runs is None:
        max_cell_runs = int(getattr(spec_mlflow, "max_cell_runs", 2000))
    threads = _child_threads(uri, threads)
    summary = _scan(output, sweep, spec, execution_id)
    if summary.rows == 0:
        raise TrackingError(f"nothing to log: no rows of sweep {sweep!r} under {output}")

    _check_reachable(uri)
    from mlflow import MlflowClient

    with _talking_to(uri, "opening the store"):
        client = MlflowClient(tracking_uri=uri)
        experiment_ids = _active_experiment_ids(client)
    with _talking_to(uri, "looking up earlier logging of this execution"):
        earlier = _existing_parents(client, experiment_ids, sweep, execution_id)
        for run in earlier:
            if run.info.status == "FINISHED":
                exp = client.get_experiment(run.info.experiment_id)
                return TrackingResult(uri, exp.name, exp.experiment_id, run.info.run_id,
                                      already_logged=True, seconds=time.monotonic() - started)
        for run in earlier:
            _delete_attempt(client, run.info.experiment_id, run.info.run_id)
    with _talking_to(uri, f"creating experiment {experiment!r}"):
        experiment_id = _experiment_id(client, experiment, _artifact_location(uri, experiment))

    # Summaries first: nothing is written to the store until they are known to compute.
    grid = summary.grid
    policies = _order_policies(summary.policies_found, spec)
    table = summary.policy_table().set_index("policy").loc[policies].reset_index()
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
    counts = {"cells": n_cells, "policies": len(policies), "rows": summary.rows,
              "failed": summary.rows - summary.rows_ok}
    sweep_hash = getattr(spec, "sweep_hash", None) or provenance.get("sweep_hash", "")
    seed = getattr(spec, "seed", None)
    if seed is None:
        seed = provenance.get("seed", "")
    git_sha = next((provenance[k] for k in ("git_sha", "git_commit", "git") if provenance.get(k)), None) or _git_sha()

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
    metrics = {
        "rows": float(summary.rows),
        "rows_ok": float(summary.rows_ok),
        FAILED_METRIC: float(counts["failed"]),
        "cells": float(n_cells),
        "policies": float(len(policies)),
        "rows_in_execution": float(summary.rows_in_execution),
        "sim_cpu_s": summary.sim_cpu_s(),
    }
    common = {TAG_EXECUTION: execution_id, TAG_SWEEP: sweep, **_source_tags(provenance.get("sweep_file"))}
    parent_tags = {
        **common,
        TAG_ROLE: "parent",
        "mlflow.note.content": _note(sweep, execution_id, table, counts, model_version, cell_note),
        "oomsweep.cell_runs": cell_note,
    }
    if git_sha:
        parent_tags["mlflow.source.git.commit"] = str(git_sha)

    with tempfile.TemporaryDirectory(prefix="oomsweep-mlflow-") as tmp:
        stalls = {p: summary.policy_group(p).stall_values() for p in policies}
        _write_artifacts(Path(tmp), table, cells, stalls, grid, policies, spec, provenance)
        del stalls

        parent_id = None
        try:
            with _talking_to(uri, "creating the parent run"):
                from mlflow.entities import Metric, Param

                now = int(time.time() * 1000)
                parent = client.create_run(experiment_id, start_time=now, tags=parent_tags,
                                           run_name=f"{sweep} {execution_id}")
                parent_id = parent.info.run_id
                client.log_batch(parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                                 params=[Param(k, v) for k, v in params.items()], synchronous=True)
            with _talking_to(uri, "uploading artifacts"):
                client.log_artifacts(parent_id, tmp)
            with _talking_to(uri, "recording the dataset"):
                source = sweep_dir(output, sweep).resolve()
                _log_dataset(client, parent_id, cells, str(source), f"{sweep}.cells")
            plans = _child_plans(summary, table, cells, grid, policies, {**common, PARENT_TAG: parent_id},
                                 with_cells)
            with _talking_to(uri, "logging child runs"):
                _log_children(client, experiment_id, plans, threads)
            with _talking_to(uri, "finishing the parent run"):
                client.set_terminated(parent_id, "FINISHED")
        except BaseException:
            if parent_id is not None:  # best effort: leave it visibly unfinished; the next call redoes it
                with contextlib.suppress(Exception):
                    client.set_terminated(parent_id, "FAILED")
            raise

    return TrackingResult(
        uri, experiment, experiment_id, parent_id,
        policy_runs=len(policies),
        cell_runs=len(cells) if with_cells else 0,
        seconds=time.monotonic() - started,
        notes=(cell_note,),
    )

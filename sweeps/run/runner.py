"""Run a sweep: spec -> cells -> pending rows -> executor -> Parquet -> MLflow -> table.

The driver owns the grid.  Rows already stored (by key: cell_id, policy,
replicate) are skipped, so a rerun after Ctrl-C, a kill, a raised `replicates`
or a new grid value runs only what is missing.  Seeds depend only on (sweep
seed, cell_id, replicate): every policy meets the same draws and the results
do not depend on batching, workers or order.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from sweeps.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfirmationNeeded, RowFailed, StorageWriteError, SweepError
from sweeps.execution.batching import DEFAULT_ROW_TIMEOUT_S, STATUS_LOST, Batch, SerialExecutor, execute_batch
from sweeps.execution.ray_executor import RayExecutor
from sweeps.run.progress import Progress
from sweeps.run.row_task import RowSimulator, RowTask
from sweeps.run.rows import identity_columns
from sweeps.storage import dataset, executions
from sweeps.storage import schema as S
from sweeps.storage.lock import SweepLock
from sweeps.storage.provenance import provenance

DEFAULT_MAX_ROWS = 1_000_000
# What the per-policy table needs (scenario_json and the rest stay unread).
SUMMARY_COLUMNS = ("policy", "status", "lockup", "max_stall_s", "kills", "handed_over", "sim_time_s",
                   "victims_pending_at_end")


@dataclass(frozen=True)
class RunOptions:
    output: str | None = None
    address: str | None = None
    workers: int | None = None
    mlflow_uri: str | None = None
    no_mlflow: bool = False
    fail_fast: bool = False
    dry_run: bool = False
    yes: bool = False
    max_rows: int = DEFAULT_MAX_ROWS
    executor: str = "ray"  # "ray" | "serial"
    flush_rows: int = 20_000
    flush_seconds: float = 10.0
    target_batch_s: float = 0.5
    row_timeout: float | None = DEFAULT_ROW_TIMEOUT_S  # wall-clock budget per row; None/0 = none
    replicate_block: int | None = None  # run replicates K*R .. K*R+R-1 (fresh seeds per scheduled run)


@dataclass
class RunResult:
    exit_code: int
    sweep: str = ""
    output: Path | None = None
    execution_id: str = ""
    cells: int = 0
    rows_total: int = 0
    rows_stored_before: int = 0
    rows_run: int = 0
    rows_failed: int = 0
    rows_lost: int = 0
    rows_timeout: int = 0
    write_error: str = ""
    wall_s: float = 0.0
    write_s: float = 0.0
    table: Any = None
    tracking: Any = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Cells and pending rows


@dataclass
class _CellInfo:
    """Driver-side columns of a cell, kept while its rows are in flight."""

    params: dict[str, Any]
    scenario_json: str
    outstanding: int = 0


@dataclass
class Plan:
    """What a sweep run will do, computed in one pass over the cells."""

    cells: int
    cell_ids: set[str]
    param_types: dict[str, pa.DataType]  # column -> type, grid order
    param_keys: dict[str, str]  # column -> grid key
    cpu_keys: list[str]
    rows_total: int  # cells × policies × replicates (adaptive: × max)
    rows_min: int  # adaptive: cells × policies × min
    pending: int  # fixed replicates: rows not stored; adaptive: lower bound


def cells_source(spec: Any, model_version: str) -> Callable[[], Iterator[Any]]:
    """Re-iterable cells: materialised when small, re-expanded (deterministically) when large."""
    from sweeps.spec.grid import count_cells, expand_cells

    if count_cells(spec) <= 20_000:
        cells = list(expand_cells(spec, model_version))
        return lambda: iter(cells)
    return lambda: expand_cells(spec, model_version)


def make_plan(spec: Any, cells: Callable[[], Iterator[Any]], done: set[tuple[str, str, int]]) -> Plan:
    from sweeps.spec.identity import param_column

    keys = list(spec.varied_keys)
    values: dict[str, set] = {k: set() for k in keys}
    kinds: dict[str, list] = {k: [] for k in keys}
    cpu_keys: list[str] = []
    labels = [p.label for p in spec.policies]
    reps = range(spec.replicates.min) if _adaptive(spec) else spec.replicate_range
    n = 0
    ids: set[str] = set()
    pending = 0
    for cell in cells():
        n += 1
        ids.add(cell.cell_id)
        for k in keys:
            v = cell.params.get(k)
            marker = (type(v).__name__, json.dumps(v, sort_keys=True, default=str))
            if marker not in values[k] and len(values[k]) < 1000:
                values[k].add(marker)
                kinds[k].append(v)
        for ck in S.cpu_keys_for(cell.scenario):
            if ck not in cpu_keys:
                cpu_keys.append(ck)
        for r in reps:
            for lab in labels:
                if (cell.cell_id, lab, r) not in done:
                    pending += 1
    types = {param_column(k): S.param_type(kinds[k]) for k in keys}
    per_cell = len(labels) * (spec.replicates.max if _adaptive(spec) else spec.replicates)
    return Plan(
        cells=n,
        cell_ids=ids,
        param_types=types,
        param_keys={param_column(k): k for k in keys},
        cpu_keys=cpu_keys,
        rows_total=n * per_cell,
        rows_min=n * len(labels) * len(reps),
        pending=pending,
    )


def _adaptive(spec: Any) -> bool:
    return not isinstance(spec.replicates, int)


class FixedFeeder:
    """Pending rows of a fixed-replicate sweep, cell by cell, replicate-major (pairs complete together)."""

    def __init__(self, spec: Any, cells: Iterator[Any], done: set, register: Callable[[Any, int], None]) -> None:
        from sweeps.spec.identity import replicate_seed

        self._seed = replicate_seed
        self.spec = spec
        self.done = done
        self.register = register
        self._rows = self._generate(cells)

    def _generate(self, cells: Iterator[Any]) -> Iterator[RowTask]:
        spec = self.spec
        for cell in cells:
            # counted first, generated lazily: a cell with 10^5 replicates is never a list in memory
            done = self.done
            reps = spec.replicate_range
            n = sum(
                1 for r in reps for p in spec.policies if (cell.cell_id, p.label, r) not in done
            ) if done else spec.replicates * len(spec.policies)
            if not n:
                continue
            self.register(cell, n)
            for r in reps:
                seed = self._seed(spec.seed, cell.cell_id, r)
                for p in spec.policies:
                    if (cell.cell_id, p.label, r) not in done:
                        yield _task(cell, p, r, seed)

    def take(self, n: int) -> list[RowTask]:
        out = []
        for row in self._rows:
            out.append(row)
            if len(out) >= n:
                break
        return out

    def on_result(self, task: RowTask, result: dict[str, Any]) -> None:
        pass


def _task(cell: Any, policy: Any, replicate: int, seed: int) -> RowTask:
    return RowTask(
        cell_id=cell.cell_id,
        cell_index=cell.index,
        policy=policy.label,
        policy_name=policy.name,
        policy_options=tuple(policy.options),
        replicate=replicate,
        seed=seed,
        scenario=cell.scenario,
    )


@dataclass
class _AdaptiveCell:
    cell: Any
    target: int
    present: dict[str, set[int]]  # policy -> replicates stored or returned
    k: dict[str, int]
    n: dict[str, int]
    outstanding: int = 0
    broken: bool = False


class AdaptiveFeeder:
    """Adaptive replication: per cell, batches of replicates for all policies together.

    A cell starts with `min` replicates; when all its outstanding rows are back,
    sweeps.analysis.stats.adaptive_next_batch decides from each policy's (lockups, ok rows)
    whether the next `batch` replicates of every policy are queued.  Stored rows (resume)
    count; a cell with a lost row stops adapting (a rerun fills the gap).
    """

    def __init__(self, spec: Any, cells: Iterator[Any], stored: dict, register: Callable[[Any, int], None]) -> None:
        from sweeps.spec.identity import replicate_seed
        from sweeps.analysis.stats import adaptive_next_batch

        self._seed = replicate_seed
        self._next_batch = adaptive_next_batch
        self.spec = spec
        self.a = spec.replicates
        self.labels = [p.label for p in spec.policies]
        self.stored = stored  # (cell_id, policy) -> list of (replicate, lockup|None)
        self.register = register
        self._cells = iter(cells)
        self._queue: collections.deque[RowTask] = collections.deque()
        self._active: dict[str, _AdaptiveCell] = {}
        self.extra_rows = 0  # rows queued beyond the `min` plan (for the progress total)

    def _activate(self, cell: Any) -> None:
        st = _AdaptiveCell(cell, self.a.min, {}, {}, {})
        for lab in self.labels:
            reps = self.stored.get((cell.cell_id, lab), [])
            st.present[lab] = {r for r, _ in reps}
            st.k[lab] = sum(1 for _, lk in reps if lk is True)
            st.n[lab] = sum(1 for _, lk in reps if lk is not None)
        self._active[cell.cell_id] = st
        self._fill(st)

    def _fill(self, st: _AdaptiveCell) -> None:
        """Queue the missing rows below the cell's target; evaluate when none are missing."""
        while True:
            rows = []
            for r in range(st.target):
                seed = self._seed(self.spec.seed, st.cell.cell_id, r)
                for p in self.spec.policies:
                    if r not in st.present[p.label]:
                        rows.append(_task(st.cell, p, r, seed))
                        st.present[p.label].add(r)
            if rows:
                st.outstanding += len(rows)
                self.register(st.cell, len(rows))
                self._queue.extendleft(reversed(rows))  # continuations first: cells finish sooner
                return
            if not self._advance(st):
                del self._active[st.cell.cell_id]
                return

    def _advance(self, st: _AdaptiveCell) -> bool:
        if st.broken:
            return False
        add = self._next_batch([(st.k[l], st.n[l]) for l in self.labels], st.target, self.a)
        if not add:
            return False
        new = st.target + add
        self.extra_rows += (new - max(st.target, self.a.min)) * len(self.labels)
        st.target = new
        return True

    def take(self, n: int) -> list[RowTask]:
        while len(self._queue) < n:
            cell = next(self._cells, None)
            if cell is None:
                break
            self._activate(cell)
        out = []
        while self._queue and len(out) < n:
            out.append(self._queue.popleft())
        return out

    def on_result(self, task: RowTask, result: dict[str, Any]) -> None:
        st = self._active.get(task.cell_id)
        if st is None:
            return
        st.outstanding -= 1
        status = result.get("status")
        if status == S.STATUS_OK:
            st.n[task.policy] += 1
            st.k[task.policy] += bool(result.get("lockup"))
        elif status == STATUS_LOST:
            st.broken = True  # rerun fills the gap; do not adapt on incomplete pairs
        if st.outstanding == 0:
            self._fill(st)


def _stored_lockups(output: Path, sweep: str, on_bad: Any = dataset.warn_skipped) -> dict[tuple[str, str], list[tuple[int, bool | None]]]:
    t = dataset.read_keys(output, sweep, extra=("lockup", "status"), on_bad=on_bad)
    out: dict[tuple[str, str], list] = collections.defaultdict(list)
    if t.num_rows == 0:
        return out
    for cid, pol, rep, lk, st in zip(
        t.column("cell_id").to_pylist(),
        t.column("policy").to_pylist(),
        t.column("replicate").to_pylist(),
        t.column("lockup").to_pylist(),
        t.column("status").to_pylist(),
    ):
        out[(cid, pol)].append((rep, bool(lk) if st == S.STATUS_OK else None))
    return out


# ---------------------------------------------------------------------------------------------
# Interrupts


class _StopFlag:
    """First SIGINT/SIGTERM: stop submitting and flush; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


# ---------------------------------------------------------------------------------------------
# The run


def _model_version() -> str:
    from oommodel import MODEL_VERSION

    return MODEL_VERSION


def _row_builder(execution_id: str, model_version: str, plan: Plan, infos: dict[str, _CellInfo]):
    def build(task: RowTask, result: dict[str, Any]) -> dict[str, Any]:
        info = infos[task.cell_id]
        row = identity_columns(
            policy_name=task.policy_name, policy_options=dict(task.policy_options), cell_id=task.cell_id,
            cell_index=task.cell_index, replicate=task.replicate, seed=task.seed, execution_id=execution_id,
            model_version=model_version, scenario_json=info.scenario_json,
        )
        row.update(info.params)
        row.update(result)
        return row

    return build


def _register(infos: dict[str, _CellInfo], plan: Plan):
    from sweeps.spec.identity import canonical_json

    def register(cell: Any, rows: int) -> None:
        info = infos.get(cell.cell_id)
        if info is None:
            params = {
                col: S.param_value(cell.params.get(key), plan.param_types[col]) for col, key in plan.param_keys.items()
            }
            info = infos[cell.cell_id] = _CellInfo(params, canonical_json(cell.scenario))
        info.outstanding += rows

    return register


def _print(msg: str, stream: TextIO) -> None:
    print(msg, file=stream, flush=True)


def load_sweep_checked(path: str | Path, max_rows: int, yes: bool) -> Any:
    """load_sweep, but a grid over the row limit is refused before its cells are validated one by one.

    Checking every cell of a 10^12-cell grid would never end; counting them is
    arithmetic.  With `yes` the full validation runs whatever the size.
    """
    from sweeps.spec.grid import count_cells
    from sweeps.spec.parse import load_sweep

    if not yes:
        shallow = load_sweep(path, check_cells=False)
        rows = count_cells(shallow) * len(shallow.policies) * shallow.max_replicates
        if rows > max_rows:
            raise ConfirmationNeeded(
                f"grid: sweep {shallow.name} has {count_cells(shallow)} cells × {len(shallow.policies)} policies × "
                f"{shallow.max_replicates} replicates = {rows} rows, above the limit of {max_rows}; "
                f"pass --yes to run it"
            )
    return load_sweep(path)


MAX_REPLICATE = 2**63 - 1  # the Parquet `replicate` column is int64


def with_replicate_block(spec: Any, block: int | None) -> Any:
    """The spec of execution block K: replicates K*R .. K*R+R-1 instead of 0 .. R-1.

    Rows are keyed by (cell, policy, replicate) and seeds hang off the replicate number, so each
    block is a fresh, independent sample of every cell, and a rerun of the same block resumes it.
    A nightly job passes the day number: every night adds R new replicates, and `oomsweep history`
    compares the nights as independent samples.
    """
    if block is None:
        return spec
    if isinstance(block, bool) or not isinstance(block, int) or block < 0:
        raise SweepError("--replicate-block", f"must be an integer >= 0, got {block!r}")
    if _adaptive(spec):
        raise SweepError("--replicate-block", "needs a fixed `replicates`, not adaptive replication")
    if (block + 1) * spec.replicates > MAX_REPLICATE + 1:
        raise SweepError("--replicate-block", f"must be at most {(MAX_REPLICATE + 1) // spec.replicates - 1} "
                         f"with {spec.replicates} replicates (replicate numbers are int64)")
    return dataclasses.replace(spec, replicate_start=block * spec.replicates)


def run_sweep(
    path: str | Path,
    opts: RunOptions = RunOptions(),
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    executor: Any = None,
) -> RunResult:
    """Run (or resume) the sweep in `path`.  Raises SweepError/StorageError/ConfirmationNeeded for bad input."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    started = time.monotonic()
    # all validation happens here, before Ray starts
    spec = with_replicate_block(load_sweep_checked(path, opts.max_rows, opts.yes), opts.replicate_block)
    output = Path(opts.output or spec.output)
    if opts.dry_run:
        return _run(path, spec, output, opts, out, err, started, executor)
    with SweepLock(output, spec.name):
        stale = dataset.clean_stale_tmp(output, spec.name)
        if stale:
            _print(f"removed {stale} unfinished .tmp file(s) left by an earlier run that was killed", err)
        return _run(path, spec, output, opts, out, err, started, executor)


def _set_aside_reporter(err: TextIO) -> Callable[[Path, str], None]:
    """on_bad for a run holding the sweep lock: rename the bad file out of sight, keep it, say so.
    Its rows are then missing from the stored keys, so this run computes exactly those rows again."""

    def set_aside(path: Path, cause: str) -> None:
        target = dataset.set_aside(path)
        _print(f"set aside {path}: {cause}; kept as {target.name}, its rows will be computed again", err)

    return set_aside


@dataclass
class _Prepared:
    """A sweep execution planned: its identity, what is stored, the cells and the plan."""

    path: str | Path
    spec: Any
    output: Path
    model_version: str
    execution_id: str
    adaptive: bool
    stored: dict  # adaptive: (cell_id, policy) -> [(replicate, lockup | None)]
    done: set[tuple[str, str, int]]
    cells: Callable[[], Iterator[Any]]
    plan: Plan
    stored_here: int  # rows of this plan already stored
    result: RunResult
    started: float  # time.monotonic() at the start of the command
    estimate: dict | None  # the dry run's estimate for exactly these rows, if one was made


@dataclass
class _Executed:
    """How the execution ended (the row counts are on the RunResult)."""

    rows_written: int
    interrupted: bool = False
    fail_message: str = ""


def _run(path, spec, output: Path, opts: RunOptions, out: TextIO, err: TextIO, started: float, executor: Any) -> RunResult:
    """prepare -> execute -> summarise (a dry run stops after preparing, with its estimate)."""
    prep = _prepare(path, spec, output, opts, out, err, started)
    if opts.dry_run:
        _dry_run(spec, prep.cells, prep.done, prep.plan, opts, out, executor)
        return prep.result
    _write_record(prep, opts)
    executed = _execute(prep, opts, err, executor)
    prep.result.wall_s = time.monotonic() - started
    _say_estimate_error(prep, executed, err)
    return _summarise(prep, executed, opts, out, err)


def _say_estimate_error(prep: _Prepared, executed: _Executed, err: TextIO) -> None:
    """After a completed run, how far the dry run's estimate of these rows was off."""
    est, result = prep.estimate, prep.result
    if est is None or executed.interrupted or executed.fail_message or result.write_error:
        return
    off = 100 * (est["seconds"] - result.wall_s) / max(result.wall_s, 1e-9)
    _print(f"the dry run estimated {est['seconds']:.0f} s ({est['low_s']:.0f}..{est['high_s']:.0f}) "
           f"for these {est['rows']} rows; they took {result.wall_s:.0f} s ({off:+.0f} %)", err)


def _prepare(path, spec, output: Path, opts: RunOptions, out: TextIO, err: TextIO, started: float) -> _Prepared:
    """Read what is stored, plan the cells, refuse a grid over --max-rows, and say what will run."""
    model_version = _model_version()
    execution_id = uuid.uuid4().hex
    result = RunResult(EXIT_OK, sweep=spec.name, output=output, execution_id=execution_id)

    on_bad = dataset.warn_skipped if opts.dry_run else _set_aside_reporter(err)  # a run holds the lock
    if not opts.dry_run:
        dataset.readable_files(output, spec.name, on_bad=on_bad)
    dataset.check_sweep_seed(output, spec.name, spec.seed)
    dataset.check_sweep_schema(output, spec.name)
    adaptive = _adaptive(spec)
    if adaptive:
        stored = _stored_lockups(output, spec.name, on_bad)
        done = {(c, p, r) for (c, p), reps in stored.items() for r, _ in reps}
    else:
        stored = {}
        done = dataset.done_keys(output, spec.name, on_bad)
    cells = cells_source(spec, model_version)
    plan = make_plan(spec, cells, done)
    result.cells = plan.cells
    result.rows_total = plan.rows_total
    # rows of this run's plan already stored (other replicate blocks and dropped grid values aside)
    stored_here = len(done) if adaptive else plan.rows_total - plan.pending
    result.rows_stored_before = stored_here
    if plan.rows_total > opts.max_rows and not opts.yes and not opts.dry_run:
        raise ConfirmationNeeded(
            f"grid: sweep {spec.name} has {plan.cells} cells × {len(spec.policies)} policies × "
            f"{spec.max_replicates} replicates = {plan.rows_total} rows, above the limit of {opts.max_rows}; "
            f"pass --yes to run it"
        )
    _print(
        f"sweep {spec.name}: {plan.cells} cells × {len(spec.policies)} policies × {_replicates_text(spec)}"
        f" = {plan.rows_total} rows{' at most' if adaptive else ''}; "
        f"{stored_here} stored, {plan.pending}{'+' if adaptive else ''} to run; output {output}",
        out if opts.dry_run else err,
    )
    estimate = None if opts.dry_run else _read_estimate(output, spec, plan.pending)
    return _Prepared(path, spec, output, model_version, execution_id, adaptive, stored, done, cells, plan,
                     stored_here, result, started, estimate)


def _write_record(prep: _Prepared, opts: RunOptions) -> None:
    """What this execution is asked to do, before any row: `report` and MLflow resume read it."""
    spec = prep.spec
    try:
        executions.write_record(prep.output, spec.name, executions.new_record(
            spec, prep.execution_id, prep.model_version, str(prep.path), prep.plan.cell_ids, not opts.no_mlflow))
    except OSError as exc:
        raise StorageWriteError(exc.errno, f"cannot write the execution record in {prep.output}: "
                                        f"{exc.strerror or exc}") from exc


def _replicates_text(spec: Any) -> str:
    """The replicates of the plan line: a number, a block of them, or the adaptive rule."""
    if _adaptive(spec):
        r = spec.replicates
        return f"adaptive replicates (min {r.min}, max {r.max}, batch {r.batch}, half-width {r.ci_half_width})"
    if not spec.replicate_start:
        return f"{spec.replicates} replicates"
    first = spec.replicate_start
    return (f"{spec.replicates} replicates (block {first // spec.replicates}: "
            f"{first}..{first + spec.replicates - 1})")


def _make_executor(opts: RunOptions) -> Any:
    """The executor --serial or Ray asks for (Ray started here, after all validation)."""
    if opts.executor == "serial":
        return SerialExecutor(fail_fast=opts.fail_fast, target_batch_s=opts.target_batch_s, row_timeout=opts.row_timeout)
    return RayExecutor(
        address=opts.address,
        workers=opts.workers,
        fail_fast=opts.fail_fast,
        target_batch_s=opts.target_batch_s,
        row_timeout=opts.row_timeout,
    ).start()


def _feeder(prep: _Prepared, register: Callable[[Any, int], None]) -> FixedFeeder | AdaptiveFeeder:
    """The pending rows, cell by cell: fixed replicates, or adaptive batches decided as results return."""
    if prep.adaptive:
        return AdaptiveFeeder(prep.spec, prep.cells(), prep.stored, register)
    return FixedFeeder(prep.spec, prep.cells(), prep.done, register)


def _execute(prep: _Prepared, opts: RunOptions, err: TextIO, executor: Any) -> _Executed:
    """Feed the pending rows to the executor and stream the results to Parquet, until done or stopped.

    A --fail-fast stop, an interrupt and a write error end the stream; the files written so far are
    complete either way (the writer is closed here), so a rerun resumes from them.
    """
    spec, plan, result = prep.spec, prep.plan, prep.result
    infos: dict[str, _CellInfo] = {}
    feeder = _feeder(prep, _register(infos, plan))
    build = _row_builder(prep.execution_id, prep.model_version, plan, infos)
    writer = dataset.DatasetWriter(
        prep.output,
        spec.name,
        S.file_schema(plan.param_types, plan.cpu_keys),
        provenance(sweep=spec.name, sweep_hash=spec.sweep_hash, seed=spec.seed, model_version=prep.model_version,
                   execution_id=prep.execution_id, sweep_file=str(prep.path), replicate_start=spec.replicate_start,
                   dry_run_estimate=prep.estimate),
        flush_rows=opts.flush_rows,
        flush_seconds=opts.flush_seconds,
    )
    progress: Progress | None = None
    stop = _StopFlag()
    ex = executor
    own_executor = ex is None
    executed = _Executed(rows_written=0)
    try:
        if plan.pending or prep.adaptive:
            if own_executor:
                ex = _make_executor(opts)
            stop.install()
            progress = Progress(plan.pending, [p.label for p in spec.policies], stream=err, skipped=prep.stored_here)
            for batch in ex.stream(RowSimulator(), feeder.take, should_stop=stop, on_idle=writer.tick):
                _consume(batch, feeder, build, writer, progress, infos, result)
                if prep.adaptive:
                    progress.set_total(plan.pending + feeder.extra_rows)
            executed.interrupted = stop()
    except RowFailed as exc:
        executed.fail_message = str(exc)
    except KeyboardInterrupt:
        executed.interrupted = True
    except StorageWriteError as exc:
        result.write_error = str(exc)
    finally:
        stop.restore()
        if not result.write_error:
            try:
                writer.close()
            except StorageWriteError as exc:
                result.write_error = str(exc)
        result.write_s = writer.write_seconds
        state = ("failed" if executed.fail_message or result.write_error else
                 "interrupted" if executed.interrupted or stop() else "stored")
        _update_record(prep.output, spec.name, prep.execution_id, err, state=state,
                       rows_written=writer.rows_written, finished=executions.now())
        if own_executor and ex is not None:
            ex.close()
        if progress is not None:
            failed = executed.fail_message or result.write_error
            progress.close("interrupted" if executed.interrupted else ("failed" if failed else "done"))
    executed.rows_written = writer.rows_written
    return executed


def _summarise(prep: _Prepared, executed: _Executed, opts: RunOptions, out: TextIO, err: TextIO) -> RunResult:
    """Say how the execution ended; when it completed, log to MLflow, print the table, count bad rows."""
    spec, output, plan, result = prep.spec, prep.output, prep.plan, prep.result
    hint = f"oomsweep run {prep.path}" + (f" --output {opts.output}" if opts.output else "")
    if result.write_error:
        _print(
            f"error: cannot store results: {result.write_error}\n"
            f"  {executed.rows_written} rows of this run are stored in complete files, the rest were not written "
            f"(no partial file is left); free space or fix the output, then resume with: {hint}",
            err,
        )
        result.exit_code = EXIT_FAILED
        return result
    if executed.interrupted:
        _print(
            f"interrupted: {executed.rows_written} rows of this run are stored in {output}; "
            f"resume with: {hint}",
            err,
        )
        result.exit_code = EXIT_INTERRUPTED
        return result
    if executed.fail_message:
        _print(f"stopped by --fail-fast: {executed.fail_message}", err)
        _print(f"{executed.rows_written} rows stored; after fixing, resume with: {hint}", err)
        result.exit_code = EXIT_FAILED
        return result

    if not executed.rows_written:
        _print(f"nothing new to run: every row of this sweep is stored in {output}", err)
        if not opts.no_mlflow:
            _update_record(output, spec.name, prep.execution_id, err, mlflow={"state": "none"})
    elif not opts.no_mlflow:  # one parent run per execution that produced rows
        result.tracking = _track(output, spec, prep.execution_id, opts, err, prep.started)
    if opts.no_mlflow or not executed.rows_written or result.tracking is not None:  # the store is not known down
        _finish_earlier_logging(output, spec, prep.execution_id, opts, err, prep.started)

    result.table = _final_table(output, spec, plan, out)
    if result.rows_lost:
        _print(f"{result.rows_lost} rows were lost to dying workers after retries; rerun to fill them: {hint}", err)
    by_status = _failed_rows(output, spec, plan)
    failed = sum(by_status.values())
    result.rows_failed = failed
    result.rows_timeout = by_status.get(S.STATUS_TIMEOUT, 0)
    if failed:
        parts = ", ".join(f"{n} {st}" for st, n in sorted(by_status.items()))
        _print(f"{failed} rows have status != ok ({parts}; see the `status` and `error` columns)", err)
        if result.rows_timeout:
            _print(
                f"  {result.rows_timeout} rows ran out of their wall-clock budget of {opts.row_timeout:g} s "
                f"(--row-timeout); they are not lockups and have no outcome",
                err,
            )
    result.exit_code = EXIT_FAILED if (failed or result.rows_lost) else EXIT_OK
    return result


def _consume(batch: Batch, feeder, build, writer, progress, infos, result: RunResult) -> None:
    by_policy: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    lockups: dict[str, int] = collections.Counter()
    failed = 0
    n = 0
    for task, res in zip(batch.items, batch.results):
        info = infos.get(task.cell_id)
        if res.get("status") == STATUS_LOST:
            result.rows_lost += 1
        else:
            by_policy[task.policy].append(build(task, res))
            n += 1
            if res.get("status") != S.STATUS_OK:
                failed += 1
            elif res.get("lockup"):
                lockups[task.policy] += 1
        feeder.on_result(task, res)
        if info is not None:
            info.outstanding -= 1
            if info.outstanding <= 0 and task.cell_id in infos:
                del infos[task.cell_id]
    for policy, rows in by_policy.items():
        writer.add(policy, rows)
    result.rows_run += n
    progress.advance(n, lockups, failed)


def _update_record(output: Path, sweep: str, execution_id: str, err: TextIO, **changes: Any) -> None:
    """Update this execution's record; a failure (disk full) is said, never fatal: the rows are safe."""
    try:
        executions.update_record(output, sweep, execution_id, **changes)
    except OSError as exc:
        _print(f"note: cannot update the execution record in {output}: {exc.strerror or exc}", err)


def _log_command(output: Path, spec: Any, opts: RunOptions) -> str:
    return f"oomsweep log {output} --sweep {spec.name}" + (f" --mlflow-uri {opts.mlflow_uri}" if opts.mlflow_uri else "")


def _finish_earlier_logging(output: Path, spec: Any, execution_id: str, opts: RunOptions, err: TextIO,
                            started: float) -> None:
    """Earlier executions of this sweep whose MLflow logging started but never finished (a driver
    killed while logging, a store that was down): log them now, after this execution's own logging
    succeeded (a store that just failed is not tried again), reusing their unfinished parent run;
    with --no-mlflow, say which command does it."""
    todo = [r for r in executions.read_records(output, spec.name)
            if r["execution_id"] != execution_id and r.get("mlflow", {}).get("state") in executions.MLFLOW_UNFINISHED]
    for rec in todo:
        eid = rec["execution_id"]
        why = ("was interrupted" if rec["mlflow"]["state"] == "logging" else
               f"failed ({rec['mlflow'].get('error', 'unknown error')})")
        if opts.no_mlflow:
            _print(f"note: MLflow logging of execution {eid} {why}; complete it with: {_log_command(output, spec, opts)}",
                   err)
            continue
        _print(f"MLflow logging of execution {eid} {why}; completing it", err)
        reps = None if _adaptive(spec) else [spec.replicate_range.start, spec.replicate_range.stop]
        same = rec.get("sweep_hash") == spec.sweep_hash and rec.get("replicates") == reps
        if _track(output, spec, eid, opts, err, started, same_spec=same) is None:
            return  # said once, with the `oomsweep log` command that logs every execution later


def _ui_link(uri: str, ui_path: str) -> str:
    """Where to look: the server itself for http(s) stores, else the `mlflow ui` the README starts."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/") + ui_path
    return f"http://127.0.0.1:5000{ui_path}  (after: mlflow ui --backend-store-uri {uri} --port 5000)"


def _track(output: Path, spec: Any, execution_id: str, opts: RunOptions, err: TextIO, started: float, *,
           same_spec: bool = True) -> Any:
    """Log to MLflow from the driver; a failure never loses the sweep (it is in Parquet).

    The execution record says "logging" while this runs, so that a driver killed now leaves a
    trace the next run (or `oomsweep log`) acts on, and "logged" or "failed" after. `same_spec`
    False: an earlier execution of another version of the sweep file (log_sweep then reads that
    execution's own file from its provenance)."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    _update_record(output, spec.name, execution_id, err, mlflow={"state": "logging"})
    try:
        from sweeps.tracking.mlflow_log import log_sweep

        res = log_sweep(
            output,
            spec.name,
            tracking_uri=opts.mlflow_uri,
            spec=spec if same_spec else None,
            execution_id=execution_id,
            max_cell_runs=spec.mlflow.max_cell_runs if same_spec else None,
            experiment=spec.mlflow.experiment if same_spec else None,
            say=lambda msg: _print(msg, err),
        )
    except Exception as exc:  # noqa: BLE001 - any tracking failure is reported once, never fatal
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split("; the results are in Parquet")[0]  # tracking's own hint; ours is more precise
        _print(
            f"MLflow tracking failed: {first}\n"
            f"  the results are complete in {output}; log them later with: {_log_command(output, spec, opts)}",
            err,
        )
        _update_record(output, spec.name, execution_id, err, mlflow={"state": "failed", "error": first[:500]})
        return None
    executions.mark_logged(output, spec.name, execution_id, res)
    uri = res.tracking_uri
    runs = res.policy_runs + res.cell_runs
    total = time.monotonic() - started
    done = f"; {res.notes[-1]}" if res.resumed and res.notes else ""
    _print(
        f"MLflow: experiment {res.experiment!r} at {uri}: {runs} child runs logged in {res.seconds:.1f} s "
        f"({100 * res.seconds / max(total, 1e-9):.0f} % of this run's {total:.0f} s){done}\n"
        f"  open: {_ui_link(uri, res.ui_path)}",
        err,
    )
    return res


def _current_table(output: Path, spec: Any, plan: Plan, columns) -> pa.Table | None:
    """Rows of the current grid as Arrow, filtered while scanning; string columns dictionary-encoded
    (a million `status` values are then a few bytes each, not a million Python strings)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    if not dataset.list_files(output, spec.name):
        return None
    labels = [p.label for p in spec.policies]
    flt = pds.field("cell_id").isin(sorted(plan.cell_ids)) & pds.field("policy").isin(labels)
    if not _adaptive(spec):
        reps = spec.replicate_range
        flt = flt & (pds.field("replicate") >= reps.start) & (pds.field("replicate") < reps.stop)
    t = dataset.read_table(output, spec.name, columns=columns, filter=flt)
    for i, f in enumerate(t.schema):
        if pa.types.is_string(f.type):
            t = t.set_column(i, f.name, pc.dictionary_encode(t.column(i)))
    return t


def _current_rows(output: Path, spec: Any, plan: Plan, columns=None):
    """Rows of the current grid as pandas: only `columns` of matching rows are read."""
    t = _current_table(output, spec, plan, columns)
    if t is None:
        return dataset.read_sweep(output, spec.name, columns=columns)
    return t.to_pandas()


def covers_text(spec: Any, rows: int) -> str:
    """Which rows a run's table covers: its sweep, replicate block and the grid it has now."""
    if _adaptive(spec):
        block = "adaptive replicates"
    else:
        r = spec.replicate_range
        block = f"block {r.start // spec.replicates} (replicates {r.start}..{r.stop - 1})"
    return f"sweep {spec.name}, {block}, every stored row of its grid: {rows} rows"


def _final_table(output: Path, spec: Any, plan: Plan, out: TextIO):
    from sweeps.analysis.report import format_table, policy_table
    from sweeps.analysis.summary import INTERVAL_NOTE

    varied = list(spec.grid) + (list(spec.sample.params) if spec.sample else [])
    columns = SUMMARY_COLUMNS + (("horizon_s",) if "horizon_s" in varied else ())
    df = _current_rows(output, spec, plan, columns=columns)
    if df.empty:
        _print("no rows stored", out)
        return None
    table = policy_table(df, policies=[p.label for p in spec.policies],
                         horizon_s=spec.base.get("horizon_s"))
    _print(f"{covers_text(spec, len(df))}\n{format_table(table)}\n({INTERVAL_NOTE})", out)
    return table


def _failed_rows(output: Path, spec: Any, plan: Plan) -> dict[str, int]:
    """Rows of the current grid whose status is not ok, counted by status."""
    import pyarrow.compute as pc

    t = _current_table(output, spec, plan, columns=["status"])
    if t is None or t.num_rows == 0:
        return {}
    counts = pc.value_counts(t.column("status")).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in counts if c["values"] != S.STATUS_OK and c["counts"]}


DRY_RUN_SAMPLE = 240  # rows timed by --dry-run, drawn at random from the pending rows of every cell
DRY_RUN_BUDGET_S = 20.0  # at most this long on the sample (after the executor started)


def estimate_path(output: Path, sweep: str) -> Path:
    """Where --dry-run leaves its estimate, for the real run to compare against (dot file: no reader sees it)."""
    return Path(output) / f".oomsweep-estimate-{sweep}.json"


def sample_pending_rows(spec: Any, k: int, done: set | frozenset = frozenset()) -> tuple[list[RowTask], int]:
    """--dry-run's sample: k pending rows drawn at random (seeded) from the whole grid, and the count
    of pending rows."""
    return _sample_rows(spec, cells_source(spec, _model_version()), done, k)


def _sample_rows(spec: Any, cells, done, k: int) -> tuple[list[RowTask], int]:
    """A seeded uniform sample (reservoir) of k pending rows over the whole grid, and the count of
    pending rows seen. Adaptive sweeps: the first `min` replicates of every cell."""
    import random

    rng = random.Random(f"dry-run:{spec.seed}")
    if _adaptive(spec):
        from sweeps.spec.identity import replicate_seed

        def rows() -> Iterator[RowTask]:
            for cell in cells():
                for r in range(spec.replicates.min):
                    seed = replicate_seed(spec.seed, cell.cell_id, r)
                    for p in spec.policies:
                        yield _task(cell, p, r, seed)
        stream = rows()
    else:
        stream = FixedFeeder(spec, cells(), done, lambda c, n: None)._rows
    sample: list[RowTask] = []
    seen = 0
    for task in stream:
        seen += 1
        if len(sample) < k:
            sample.append(task)
        else:
            j = rng.randrange(seen)
            if j < k:
                sample[j] = task
    rng.shuffle(sample)
    return sample, seen


def _dry_run(spec: Any, cells, done, plan: Plan, opts: RunOptions, out: TextIO, executor: Any = None) -> dict | None:
    """Time a random sample of the sweep's own pending rows on the executor that will run them and
    estimate the wall time of the rows (+ the executor's start-up), with a bootstrap 95 % interval.

    Effective parallelism = Σ row wall times / elapsed wall time of the sample, measured on this
    machine under its current load; the interval covers which rows were drawn, not later changes
    of load. The estimate is printed (stdout) and left in estimate_path() for the real run.
    """
    import numpy as np

    sample, pending = _sample_rows(spec, cells, done, DRY_RUN_SAMPLE)
    if not sample:
        _print("dry run: nothing to run", out)
        return None
    t0 = time.monotonic()
    ex = executor
    own = ex is None
    if own:
        if opts.executor == "serial":
            ex = SerialExecutor(fail_fast=False, target_batch_s=opts.target_batch_s, row_timeout=opts.row_timeout)
        else:
            ex = RayExecutor(address=opts.address, workers=opts.workers, fail_fast=False,
                             target_batch_s=opts.target_batch_s, row_timeout=opts.row_timeout).start()
    startup_s = time.monotonic() - t0
    queue = list(sample)
    walls: list[float] = []
    failed = 0
    deadline = time.monotonic() + DRY_RUN_BUDGET_S
    t1 = time.monotonic()

    def take(n: int) -> list[RowTask]:
        if time.monotonic() > deadline:
            return []
        batch, queue[:] = queue[:n], queue[n:]
        return batch

    try:
        for batch in ex.stream(RowSimulator(), take):
            for res in batch.results:
                if res.get("status") == S.STATUS_OK and res.get("wall_s") is not None:
                    walls.append(float(res["wall_s"]))
                else:
                    failed += 1
    finally:
        elapsed = time.monotonic() - t1
        if own:
            ex.close()
    if not walls:
        _print(f"dry run: no row of the sample finished ({failed} failed)", out)
        return None
    w = np.asarray(walls)
    parallel = max(float(w.sum()) / max(elapsed, 1e-9), 1e-9)  # rows running at once, as measured
    todo = pending if not _adaptive(spec) else plan.rows_min
    boot = np.random.default_rng(spec.seed).choice(w, size=(2000, len(w)), replace=True).mean(axis=1)
    per_row = float(w.mean())
    est = startup_s + todo * per_row / parallel
    low = startup_s + todo * float(np.quantile(boot, 0.025)) / parallel
    high = startup_s + todo * float(np.quantile(boot, 0.975)) / parallel
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    _print(
        f"dry run: timed {len(w)} of {todo} pending rows, drawn at random from every cell, on "
        f"{'Ray' if opts.executor != 'serial' else 'the serial executor'} ({startup_s:.1f} s to start): "
        f"{per_row * 1000:.1f} ms/row on average (median {float(np.median(w)) * 1000:.1f}, "
        f"max {float(w.max()) * 1000:.0f}), {parallel:.2f} rows at once\n"
        f"dry run: estimated wall time {est:.0f} s (95 % interval {low:.0f}..{high:.0f} s over the rows drawn; "
        f"load average now {load:.1f}), plus MLflow logging"
        + (f"; at most {startup_s + plan.rows_total * per_row / parallel:.0f} s if every cell reaches max"
           if _adaptive(spec) else "")
        + (f"\ndry run: {failed} sampled rows did not finish ok" if failed else ""),
        out,
    )
    estimate = {"rows": todo, "seconds": round(est, 1), "low_s": round(low, 1), "high_s": round(high, 1),
                "sampled_rows": len(w), "parallel": round(parallel, 3), "startup_s": round(startup_s, 1),
                "load_average": round(load, 2), "sweep_hash": spec.sweep_hash,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        path = estimate_path(Path(opts.output or spec.output), spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(estimate))
    except OSError:
        pass
    return estimate


def _read_estimate(output: Path, spec: Any, pending: int) -> dict | None:
    """The dry run's estimate for exactly this run (same sweep file, same pending rows), if any."""
    try:
        est = json.loads(estimate_path(output, spec.name).read_text())
    except (OSError, ValueError):
        return None
    if est.get("sweep_hash") != spec.sweep_hash or est.get("rows") != pending:
        return None
    return est

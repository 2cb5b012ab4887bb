"""Run rows in batches: on Ray (local, a cluster, or a Ray job's cluster) or serially.

One row is a few milliseconds of simulation and a Ray task costs about a
millisecond (ecosystem.md §1.6), so rows travel in batches sized to about
`target_batch_s` of simulation from the per-row wall time the workers measure.
The first batches are small ("slow start") and grow as measurements arrive.
A bounded window of tasks is kept in flight with `ray.wait` and results are
handed back in completion order, so memory stays bounded however large the
sweep.  A model exception is captured in its row (status "error", with the
row's description: cell and seed) unless fail-fast; a row that outlives its
wall-clock budget (`row_timeout`) is cut short and recorded with status
"timeout" and null outcomes (never a lockup); a worker that dies is
retried by Ray (`max_retries`); rows of a batch whose retries ran out come back
with status "lost" and are never written, so a rerun picks them up.

Workers only compute: they never touch MLflow or Parquet.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sweeps.schema import STATUS_ERROR, STATUS_OK, STATUS_TIMEOUT

STATUS_LOST = "lost"  # never written: the batch died after Ray's retries
DEFAULT_ROW_TIMEOUT_S = 300.0  # a row is milliseconds to seconds; five minutes means it is stuck
DRAIN_S = 10.0  # after a stop request, how long running batches may still deliver their rows

Take = Callable[[int], list[Any]]  # take(n) -> up to n items available now ([] = none right now)


class RowFailed(RuntimeError):
    """A row raised (or ran out of its wall-clock budget) and fail-fast is on."""


class RowTimeout(BaseException):
    """Raised inside a row's simulation when its wall-clock budget runs out.

    A BaseException so that no `except Exception` in the model can swallow it.
    """


class _RowBudget:
    """A per-row wall-clock budget that interrupts pure-Python simulation code.

    On the main thread (Ray task workers, the serial executor) SIGALRM via
    setitimer; elsewhere a watchdog timer that raises RowTimeout in the row's
    thread (PyThreadState_SetAsyncExc).  Both are checked between bytecodes,
    which is where SimPy spends its time; a row stuck inside one C call is not
    interrupted (docs/reliability.md).
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self._armed = False
        self._fired = False
        self._lock = threading.Lock()
        self._use_alarm = (
            self.seconds is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        self._old_handler: Any = None

    def _on_alarm(self, signum, frame) -> None:
        if self._armed:
            self._armed = False
            raise RowTimeout()

    def __enter__(self) -> "_RowBudget":
        if self._use_alarm:
            self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, *exc) -> None:
        if self._use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler or signal.SIG_DFL)

    @contextmanager
    def row(self):
        if self.seconds is None:
            yield
            return
        if self._use_alarm:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            try:
                yield
            finally:
                self._armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            return
        tid = threading.get_ident()
        self._armed, self._fired = True, False

        def fire() -> None:
            with self._lock:
                if self._armed:
                    self._fired = True
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(RowTimeout))

        timer = threading.Timer(self.seconds, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with self._lock:
                self._armed = False
                timer.cancel()
                if self._fired:  # an exception set but not yet raised must not escape later
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)


class ExecutorError(RuntimeError):
    """Ray could not be started or joined.  `bad_input`: the address given was unusable."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


@dataclass(frozen=True)
class Batch:
    """A finished batch: its items and one result dict per item (same order)."""

    items: list[Any]
    results: list[dict[str, Any]]


def _describe(item: Any) -> str:
    d = getattr(item, "describe", None)
    return d() if callable(d) else repr(item)


def execute_batch(
    fn: Callable[[Any], dict[str, Any]],
    items: Sequence[Any],
    fail_fast: bool,
    node_id: str,
    row_timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Run `fn` on each item; status columns added, exceptions captured per item.

    A row that runs longer than `row_timeout` seconds of wall time is cut short
    and recorded with status "timeout" (never as a lockup: its outcome columns
    stay null) and its cell and seed in `error`.
    """
    pid = os.getpid()
    out: list[dict[str, Any]] = []
    with _RowBudget(row_timeout) as budget:
        for item in items:
            t0 = time.perf_counter()
            try:
                with budget.row():
                    values = dict(fn(item))
                values.update(status=STATUS_OK, error="")
            except RowTimeout:
                msg = f"row exceeded its wall-clock budget of {budget.seconds:g} s (--row-timeout) [{_describe(item)}]"
                if fail_fast:
                    raise RowFailed(msg) from None
                values = {"status": STATUS_TIMEOUT, "error": msg}
            except Exception as exc:  # a model bug in one row must not take down the sweep
                if fail_fast:
                    raise RowFailed(f"{type(exc).__name__}: {exc} [{_describe(item)}]") from exc
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                values = {"status": STATUS_ERROR, "error": f"{tb} [{_describe(item)}]"}
            values.update(wall_s=time.perf_counter() - t0, node_id=node_id, worker_pid=pid)
            out.append(values)
    return out


class BatchSizer:
    """Rows per batch from an exponentially weighted per-row wall time.

    Starts at `start` rows and grows at most `growth`× per completed batch so a
    first measurement dominated by imports cannot produce one giant batch.
    """

    def __init__(self, target_s: float = 0.5, start: int = 2, growth: float = 4.0, max_rows: int = 20_000) -> None:
        self.target_s = target_s
        self.size = start
        self.growth = growth
        self.max_rows = max_rows
        self.per_row_s: float | None = None

    def observe(self, results: Sequence[dict[str, Any]]) -> None:
        walls = [r.get("wall_s") for r in results if r.get("wall_s") is not None]
        if not walls:
            return
        mean = sum(walls) / len(walls)
        self.per_row_s = mean if self.per_row_s is None else 0.7 * self.per_row_s + 0.3 * mean
        want = max(1, round(self.target_s / max(self.per_row_s, 1e-6)))
        self.size = max(1, min(want, int(self.size * self.growth) + 1, self.max_rows))


class Executor(Protocol):
    workers: int

    def stream(
        self,
        fn: Callable[[Any], dict[str, Any]],
        take: Take,
        *,
        should_stop: Callable[[], bool] = ...,
        on_idle: Callable[[], None] = ...,
    ) -> Iterator[Batch]: ...

    def close(self) -> None: ...


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


class SerialExecutor:
    """Runs batches in this process: for tests, benchmarks and dry-run calibration."""

    def __init__(self, *, fail_fast: bool = False, target_batch_s: float = 0.5, row_timeout: float | None = None) -> None:
        self.workers = 1
        self.fail_fast = fail_fast
        self.row_timeout = row_timeout
        self.sizer = BatchSizer(target_batch_s)

    def stream(self, fn, take, *, should_stop=_never, on_idle=_nothing) -> Iterator[Batch]:
        while not should_stop():
            items = take(self.sizer.size)
            if not items:
                return
            results = execute_batch(fn, items, self.fail_fast, "local", self.row_timeout)
            self.sizer.observe(results)
            yield Batch(items, results)
            on_idle()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _private_token_auth() -> None:
    """Token auth with a per-run token for an embedded cluster, unless the user chose a mode.

    Ray 2.60 enables token auth for a new local cluster and writes
    ~/.ray/auth_token (ecosystem.md §0.7).  We keep token auth but hold the
    token in the environment our own Ray processes inherit, so nothing is
    written to or read from the user's home.  Ray caches its config at import,
    so the cache is refreshed after the variables are set.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    import secrets

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # older/newer Ray without these hooks: the variables suffice
        pass


def _short_temp_dir() -> str:
    """A private, short temp dir: Ray's unix socket paths must stay under ~107 bytes.

    OOMSWEEP_RAY_TEMP_BASE picks another (short) parent directory; tests use it,
    with OOMSWEEP_KEEP_RAY_TEMP=1, to inspect the Ray logs of a run afterwards.
    """
    base = os.environ.get("OOMSWEEP_RAY_TEMP_BASE") or ("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir())
    return tempfile.mkdtemp(prefix="oomsw-", dir=base)


class RayExecutor:
    """Batches on Ray with a bounded in-flight window.

    address None: a Ray job's cluster when RAY_ADDRESS is set, else an embedded
    local Ray with `workers` CPUs, a private temp dir, no dashboard and no usage
    stats.  "auto" or "ray://host:port" joins an existing cluster.  An already
    initialised Ray (tests) is reused and left running, and `workers` then caps
    the number of batches in flight.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        fail_fast: bool = False,
        target_batch_s: float = 0.5,
        max_retries: int = 3,
        window: int | None = None,
        row_timeout: float | None = None,
    ) -> None:
        self.address = address
        self.row_timeout = row_timeout
        self.requested_workers = workers
        self.fail_fast = fail_fast
        self.sizer = BatchSizer(target_batch_s)
        self.max_retries = max_retries
        self._window = window
        self._owns_ray = False
        self._temp_dir: str | None = None
        self._remote = None
        self.workers = workers or os.cpu_count() or 1
        self.node_id = ""

    def start(self) -> "RayExecutor":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import logging

        import ray

        if ray.is_initialized():
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.workers = min(self.requested_workers or cpus, cpus)
            # Someone else's Ray (tests, notebooks): an explicit `workers` caps the batches in flight.
            self._window = self._window or (self.workers if self.requested_workers else 2 * self.workers)
        else:
            # Joining a cluster: its dashboard and temp dir are not ours to configure.
            kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=False)
            if self.address or os.environ.get("RAY_ADDRESS"):
                where = self.address or os.environ["RAY_ADDRESS"]
                try:
                    # RAY_ADDRESS: launched as a Ray job, use the job's cluster.
                    ray.init(address=self.address, **kwargs) if self.address else ray.init(**kwargs)
                except Exception as exc:  # ConnectionError, RuntimeError, ValueError... one message
                    raise ExecutorError(
                        f"{'--address' if self.address else 'RAY_ADDRESS'} {where}: cannot join the Ray cluster: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                        bad_input=True,
                    ) from None
            else:
                # Ray 2.60 turns on token auth for new local clusters and writes
                # ~/.ray/auth_token (ecosystem.md §0.7).  Keep token auth, but with a
                # per-run token held in the environment of our own processes only,
                # unless the user chose a mode.
                _private_token_auth()
                self._temp_dir = _short_temp_dir()
                ray.init(
                    address="local",
                    num_cpus=self.workers,
                    _temp_dir=self._temp_dir,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    # Ray renices workers to 15 so its daemons stay responsive; in a local
                    # cluster that exists only for this sweep the workers are the job, and at
                    # nice 15 any other load on the machine starves them.
                    _system_config={"worker_niceness": 0},
                )
            self._owns_ray = True
            cpus = int(ray.cluster_resources().get("CPU", 1))
            if self.address or os.environ.get("RAY_ADDRESS"):
                self.workers = cpus
            self._window = self._window or max(2, 2 * self.workers)
        self.node_id = ray.get_runtime_context().get_node_id() or socket.gethostname()
        self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_remote_batch)
        return self

    def stream(self, fn, take, *, should_stop=_never, on_idle=_nothing) -> Iterator[Batch]:
        import ray
        from ray.exceptions import RayTaskError

        if self._remote is None:
            self.start()
        fn_ref = ray.put(fn)
        in_flight: dict[Any, list[Any]] = {}
        drain_until = 0.0
        try:
            while True:
                while not should_stop() and len(in_flight) < self._window:
                    items = take(self.sizer.size)
                    if not items:
                        break
                    ref = self._remote.remote(fn_ref, items, self.fail_fast, self.row_timeout)
                    in_flight[ref] = items
                if not in_flight:
                    # Nothing running: more work can only appear if take() gives some now.
                    if should_stop():
                        return
                    items = take(self.sizer.size)
                    if not items:
                        return
                    ref = self._remote.remote(fn_ref, items, self.fail_fast, self.row_timeout)
                    in_flight[ref] = items
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.2)
                on_idle()
                if should_stop():
                    # Stop submitting, but keep the batches already running: their rows are
                    # stored, not recomputed on resume. Past DRAIN_S they are abandoned.
                    drain_until = drain_until or time.monotonic() + DRAIN_S
                    if time.monotonic() > drain_until:
                        return
                for ref in ready:
                    items = in_flight.pop(ref)
                    try:
                        results = ray.get(ref)
                    except RayTaskError as exc:
                        cause = exc.as_instanceof_cause()
                        if isinstance(cause, RowFailed):
                            raise RowFailed(str(cause).splitlines()[-1]) from None
                        raise
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as exc:
                        msg = f"{type(exc).__name__} after {self.max_retries} retries"
                        results = [{"status": STATUS_LOST, "error": msg} for _ in items]
                    else:
                        self.sizer.observe(results)
                    yield Batch(items, results)
        finally:
            # No ray.cancel() of what is left: with Ray 2.60 a reply that arrives for a task the
            # driver has just cancelled aborts the driver ("Tried to complete task that was not
            # pending", task_manager.cc), which turned a clean Ctrl-C into SIGABRT. The embedded
            # Ray's shutdown stops its workers; on a cluster the abandoned batches run to their
            # end (sized for ~0.5 s, at most row_timeout a row) and their results are dropped.
            in_flight.clear()

    def close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        if self._temp_dir:
            if os.environ.get("OOMSWEEP_KEEP_RAY_TEMP") != "1":
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> "RayExecutor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _remote_batch(
    fn: Callable[[Any], dict[str, Any]], items: Sequence[Any], fail_fast: bool, row_timeout: float | None = None
) -> list[dict[str, Any]]:
    """Body of one Ray task (module-level so workers import it by reference)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id() or socket.gethostname()
    return execute_batch(fn, items, fail_fast, node_id, row_timeout)


@dataclass(frozen=True)
class RowTask:
    """One row to simulate: (cell, policy, replicate) with its derived seed."""

    cell_id: str
    cell_index: int
    policy: str  # PolicyChoice.label (partition value)
    policy_name: str
    policy_options: tuple[tuple[str, Any], ...]
    replicate: int
    seed: int
    scenario: dict[str, Any]

    def describe(self) -> str:
        return f"cell {self.cell_id} (index {self.cell_index}), policy {self.policy}, replicate {self.replicate}, seed {self.seed}"


class RowSimulator:
    """Callable run on workers: RowTask -> outcome columns.

    Parsed scenarios are cached per cell for the life of one batch (a fresh
    instance is unpickled per task), so a batch of one cell validates once.
    """

    def __init__(self) -> None:
        self._scenarios: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._scenarios = {}

    def __call__(self, task: RowTask) -> dict[str, Any]:
        from oommodel import Scenario, simulate

        from sweeps.schema import outcome_columns

        sc = self._scenarios.get(task.cell_id)
        if sc is None:
            if len(self._scenarios) > 64:
                self._scenarios.clear()
            sc = self._scenarios[task.cell_id] = Scenario.from_dict(task.scenario)
        out = simulate(sc, task.policy_name, seed=task.seed, **dict(task.policy_options))
        return outcome_columns(out)


def make_executor(kind: str = "ray", **kwargs: Any) -> Executor:
    if kind == "serial":
        return SerialExecutor(fail_fast=kwargs.get("fail_fast", False), row_timeout=kwargs.get("row_timeout"))
    return RayExecutor(**kwargs)

"""Rows in batches: run one batch in this process, size batches, and the serial executor.

One row is a few milliseconds of simulation and a Ray task costs about a millisecond
(ecosystem.md §1.6), so rows travel in batches sized to about `target_batch_s` of simulation from
the per-row wall time the workers measure; the first batches are small ("slow start").  A row's
exception is captured in its row (status "error", with the row's description) unless fail-fast; a
row that outlives its wall-clock budget (`row_timeout`) is cut short and recorded with status
"timeout" and null outcomes (never a lockup).

What a row is and computes is the caller's (`fn`, the items): this package imports no oommodel.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sweeps.errors import RowFailed
from sweeps.storage.schema import STATUS_ERROR, STATUS_OK, STATUS_TIMEOUT

__all__ = ["STATUS_LOST", "DEFAULT_ROW_TIMEOUT_S", "Take", "RowTimeout", "Batch", "execute_batch", "BatchSizer", "Executor", "SerialExecutor", "never", "nothing"]

STATUS_LOST = "lost"  # never written: the batch died after Ray's retries
DEFAULT_ROW_TIMEOUT_S = 300.0  # a row is milliseconds to seconds; five minutes means it is stuck

Take = Callable[[int], list[Any]]  # take(n) -> up to n items available now ([] = none right now)


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


def never() -> bool:
    return False


def nothing() -> None:
    return None


class SerialExecutor:
    """Runs batches in this process: for tests, benchmarks and dry-run calibration."""

    def __init__(self, *, fail_fast: bool = False, target_batch_s: float = 0.5, row_timeout: float | None = None) -> None:
        self.workers = 1
        self.fail_fast = fail_fast
        self.row_timeout = row_timeout
        self.sizer = BatchSizer(target_batch_s)

    def stream(self, fn, take, *, should_stop=never, on_idle=nothing) -> Iterator[Batch]:
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

"""Batches on Ray (local, a cluster, or a Ray job's cluster).

A bounded window of tasks is kept in flight with `ray.wait` and results are
handed back in completion order, so memory stays bounded however large the
sweep.  A worker that dies is retried by Ray (`max_retries`); rows of a batch
whose retries ran out come back with status "lost" and are never written, so a
rerun picks them up.  Batching, sizing and the row budget: `sweeps.execution.batching`.

Workers only compute: they never touch MLflow or Parquet.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sweeps.errors import RayAddressError, RowFailed
from sweeps.execution.batching import STATUS_LOST, Batch, BatchSizer, execute_batch, never, nothing

__all__ = ["RayExecutor"]

DRAIN_S = 10.0  # after a stop request, how long running batches may still deliver their rows

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
                    raise RayAddressError(
                        f"{'--address' if self.address else 'RAY_ADDRESS'} {where}: cannot join the Ray cluster: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
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

    def stream(self, fn, take, *, should_stop=never, on_idle=nothing) -> Iterator[Batch]:
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

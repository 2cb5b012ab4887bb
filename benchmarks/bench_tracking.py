"""Child-run logging throughput: N child runs shaped like oomsweep's (cell, policy) runs under one
parent, several ways, against (a) a fresh SQLite store in a temp dir and (b) a real `mlflow server`
on 127.0.0.1 (free port, SQLite backend in a temp dir), printed side by side.

    python benchmarks/bench_tracking.py [--runs 2000] [--stores sqlite,server] [--server-workers 2]
                                        [--ways before,oomsweep,...] [--threads 4,16]

A child run is what `sweeps.tracking.mlflow_log` logs per (cell, policy): create_run with 10 tags (+ the run
name), one log_batch with 3 params (2 grid keys + policy) and 10 metrics, set_terminated FINISHED.

Ways (each against a fresh store / a new experiment on the server):
  before     the code before this benchmark existed: serial on SQLite, 8 threads on a server
  oomsweep   `sweeps.tracking.mlflow_log._log_children` with the thread count `log_sweep` picks for the store
  serial     one thread
  threads    each of --threads (default 4) threads, whatever the store (more than 10 needs
             MLFLOW_HTTP_POOL_MAXSIZE raised, else urllib3 discards the extra connections)
  wal        serial, SQLite database switched to journal_mode=WAL first (SQLite only; persistent
             property of the .db file: `sqlite3 mlflow.db 'PRAGMA journal_mode=WAL'`)
Each way first logs 20 untimed runs (warm-up: lazy imports, first connections). For each way it
prints runs/s, seconds, seconds extrapolated to 2,000 runs, and CPU milliseconds per run of this
process and (server) of the server's whole process group (idle, it uses next to none). Also a raw keep-alive latency probe of
GET /health against each server (shows a Nagle/delayed-ACK stall as ~40 ms per request).
Prints measured figures only; it never fails on a timing. Other load on the machine skews them all:
the load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

WAYS = ("before", "oomsweep", "serial", "threads", "wal")


def plans(n: int, parent_id: str) -> list:
    from sweeps.tracking import mlflow_log as tracking

    common = {tracking.TAG_EXECUTION: "bench-exec", tracking.TAG_SWEEP: "bench",
              **tracking._source_tags("configs/quick.yaml"), tracking.PARENT_TAG: parent_id}
    policies = ("upstream_4_19", "timeout_backoff[timeout_s=2.0]")
    out = []
    for i in range(n):
        cell, policy = divmod(i, len(policies))
        params = {"victim.sched_at_handover": ("unchanged", "idle")[cell % 2],
                  "groups.0.sched.rt_priority": str(1 + cell % 99), "policy": policies[policy]}
        metrics = {m: 0.25 + (i % 7) / 10 for m in (*tracking.METRICS, tracking.FAILED_METRIC)}
        tags = {**common, tracking.TAG_ROLE: "cell", tracking.TAG_CELL: f"{cell:016x}",
                "oomsweep.cell_index": str(cell)}
        out.append(tracking._RunPlan(f"{policies[policy]} · cell {cell}", tags, params, metrics))
    return out


def before_log_children(client, experiment_id, runs, threads):
    """The child-run loop as it was (create_run with tags, log_batch, set_terminated; a thread pool)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    from mlflow.entities import Metric, Param

    def one(plan):
        now = int(time.time() * 1000)
        run = client.create_run(experiment_id, start_time=now, tags=dict(plan.tags), run_name=plan.name)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in plan.metrics.items()],
                         params=[Param(k, v) for k, v in plan.params.items()], synchronous=True)
        client.set_terminated(run.info.run_id, "FINISHED")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one, p) for p in runs]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            f.result()


def group_cpu_s(pgid: int | None) -> float:
    """utime+stime of every live process in a process group (Linux /proc), in seconds."""
    if pgid is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / ticks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(directory: Path, workers: int):
    """`mlflow server` as the tests start it: 127.0.0.1, free port, SQLite backend, own process group."""
    port = free_port()
    log = open(directory / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--backend-store-uri", f"sqlite:///{directory / 'server.db'}",
         "--default-artifact-root", str(directory / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mlflow server did not come up:\n" + (directory / "server.log").read_text()[-2000:])
            time.sleep(0.3)
        yield uri, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def settle(pgid: int | None, limit_s: float = 30.0) -> None:
    """Wait (up to limit_s) until the server's process group is idle: <5 % of a CPU over 1 s."""
    deadline = time.monotonic() + limit_s
    while pgid is not None and time.monotonic() < deadline:
        before = group_cpu_s(pgid)
        time.sleep(1.0)
        if group_cpu_s(pgid) - before < 0.05:
            return


def keepalive_latency_ms(uri: str, requests: int = 20) -> tuple[float, float]:
    """Median and min of GET /health on one kept-alive connection (client TCP_NODELAY on)."""
    host, port = uri.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    times.sort()
    return times[len(times) // 2], times[0]


def run_way(way: str, uri: str, n: int, threads: int, server_pgid: int | None) -> dict:
    from mlflow import MlflowClient

    from sweeps.tracking import mlflow_log as tracking

    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"bench-{way}-{time.time_ns()}")
    parent = client.create_run(experiment_id, run_name="bench parent")
    runs = plans(n, parent.info.run_id)
    before_log_children(client, experiment_id, plans(20, "warm-up"), 1 if uri.startswith("sqlite") else 4)
    is_sqlite = uri.startswith("sqlite")
    if way == "before":
        used = 1 if is_sqlite else 8
    elif way == "oomsweep":
        chooser = getattr(tracking, "_child_threads", None)
        used = chooser(uri, None) if chooser else (1 if is_sqlite else 8)
    elif way in ("serial", "wal"):
        used = 1
    else:
        used = threads
    settle(server_pgid)
    cpu0, srv0, t0 = time.process_time(), group_cpu_s(server_pgid), time.monotonic()
    if way == "oomsweep":
        tracking._log_children(client, experiment_id, runs, used)
    else:
        before_log_children(client, experiment_id, runs, used)
    seconds = time.monotonic() - t0
    cpu, srv = time.process_time() - cpu0, group_cpu_s(server_pgid) - srv0
    client.set_terminated(parent.info.run_id, "FINISHED")
    done = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                              "and attributes.status = 'FINISHED'", max_results=50000)
    return {"way": way, "threads": used, "seconds": seconds, "rate": n / seconds,
            "client_ms": 1000 * cpu / n, "server_ms": 1000 * srv / n if server_pgid else None,
            "finished": len(done), "load": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--stores", default="sqlite,server")
    ap.add_argument("--ways", default="before,oomsweep", help=f"comma-separated, of {', '.join(WAYS)}")
    ap.add_argument("--threads", default="4", help="comma-separated thread counts of the `threads` way")
    ap.add_argument("--server-workers", default="2", help="comma-separated --workers values to try")
    args = ap.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    unknown = set(ways) - set(WAYS)
    if unknown:
        ap.error(f"unknown ways {sorted(unknown)}")
    ways = [(w, t) for w in ways for t in ([int(x) for x in args.threads.split(",")] if w == "threads" else [0])]
    import mlflow

    print(f"mlflow {mlflow.__version__}, {args.runs} child runs a way, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        tmp = Path(tmp)
        for store in args.stores.split(","):
            if store == "sqlite":
                for way, threads in ways:
                    db = tmp / f"sqlite-{way}{threads or ''}" / "mlflow.db"
                    db.parent.mkdir()
                    uri = f"sqlite:///{db}"
                    if way == "wal":
                        from mlflow import MlflowClient

                        MlflowClient(uri).search_experiments()  # create the tables first
                        with contextlib.closing(sqlite3.connect(db)) as con:
                            con.execute("PRAGMA journal_mode=WAL")
                    r = run_way(way, uri, args.runs, threads, None)
                    results.append({"store": "sqlite", **r})
                    print_row(results[-1], args.runs)
            elif store == "server":
                for workers in [int(w) for w in args.server_workers.split(",") if w]:
                    directory = tmp / f"server-{workers}"
                    directory.mkdir()
                    with mlflow_server(directory, workers) as (uri, pgid):
                        settle(pgid)
                        median, low = keepalive_latency_ms(uri)
                        print(f"server --workers {workers}: GET /health on a kept-alive connection: "
                              f"median {median:.1f} ms, min {low:.1f} ms", flush=True)
                        for way, threads in ways:
                            if way == "wal":
                                continue
                            r = run_way(way, uri, args.runs, threads, pgid)
                            results.append({"store": f"server(workers={workers})", **r})
                            print_row(results[-1], args.runs)
            else:
                ap.error(f"unknown store {store!r}")
    print("\nsummary")
    print(f"{'store':<20} {'way':<9} {'threads':>7} {'runs/s':>7} {'seconds':>8} {'s/2000':>7} "
          f"{'client ms/run':>13} {'server ms/run':>13} {'load':>5}")
    for r in results:
        print(f"{r['store']:<20} {r['way']:<9} {r['threads']:>7} {r['rate']:>7.1f} {r['seconds']:>8.1f} "
              f"{2000 / r['rate']:>7.0f} {r['client_ms']:>13.1f} "
              f"{'' if r['server_ms'] is None else format(r['server_ms'], '.1f'):>13} {r['load']:>5.2f}")
    return 0


def print_row(r: dict, n: int) -> None:
    server = "" if r["server_ms"] is None else f", server CPU {r['server_ms']:.1f} ms/run"
    print(f"{r['store']:<20} {r['way']:<9} threads={r['threads']:<3} {r['rate']:6.1f} runs/s  "
          f"{r['seconds']:6.1f} s for {n} ({2000 / r['rate']:.0f} s for 2000)  client CPU "
          f"{r['client_ms']:.1f} ms/run{server}  FINISHED {r['finished']}/{n}  load {r['load']:.2f}",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""The same sweep rows three ways in one process: oomsweep's executor on local Ray, a chunked
multiprocessing.Pool over all cores, and a plain serial loop. Prints wall times, throughput ratios
and the share of Parquet writing in oomsweep's wall time, plus the cost of writing 100,000 rows.

    python benchmarks/bench_sweep.py [--sweep configs/quick.yaml] [--rows 400] [--workers N]

Goal (issue 3): oomsweep >= 0.95 x the chunked Pool's throughput; Parquet (+ MLflow) < 5 % of the
wall time at 100,000 rows. Ray's start-up is reported separately: it is paid once per sweep, not per row.
Prints measured figures only; it never fails on a timing. Other load on the machine skews all three.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def sweep_rows(sweep: Path, rows: int):
    """The first `rows` rows of the sweep (replicates raised as needed), as RowTasks, plus the plan."""
    from oommodel import MODEL_VERSION

    from sweeps.run import runner
    from sweeps.spec.grid import count_cells
    from sweeps.spec.parse import load_sweep

    spec = load_sweep(sweep)
    per_rep = count_cells(spec) * len(spec.policies)
    spec = dataclasses.replace(spec, replicates=max(1, -(-rows // per_rep)))
    cells = runner.cells_source(spec, MODEL_VERSION)
    plan = runner.make_plan(spec, cells, set())
    feeder = runner.FixedFeeder(spec, cells(), set(), lambda c, n: None)
    return spec, plan, feeder.take(rows)


def _run_chunk(tasks):
    from sweeps.run.row_task import RowSimulator
    from sweeps.execution.batching import execute_batch

    return execute_batch(RowSimulator(), tasks, False, "pool")


def bench_serial(tasks) -> float:
    from sweeps.run.row_task import RowSimulator
    from sweeps.execution.batching import execute_batch

    t0 = time.perf_counter()
    execute_batch(RowSimulator(), tasks, False, "serial")
    return time.perf_counter() - t0


def bench_pool(tasks, workers: int) -> float:
    chunk = max(1, len(tasks) // (workers * 8))
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        n = sum(len(r) for r in pool.imap_unordered(_run_chunk, chunks))
    wall = time.perf_counter() - t0
    assert n == len(tasks)
    return wall


def bench_oomsweep(spec, plan, tasks, workers: int, output: Path) -> dict:
    """oomsweep's own path: executor.stream -> row building -> DatasetWriter, as in runner.run_sweep."""
    from oommodel import MODEL_VERSION

    from sweeps.storage import schema as S
    from sweeps.storage import dataset as storage
    from sweeps.execution.ray_executor import RayExecutor
    from sweeps.run.row_task import RowSimulator
    from sweeps.run.runner import RunResult, _consume, _register, _row_builder
    from sweeps.storage.provenance import provenance

    t0 = time.perf_counter()
    ex = RayExecutor(workers=workers).start()
    start_s = time.perf_counter() - t0
    # Warm-up: the first batches import oommodel in each fresh worker (the Pool's forked children
    # inherit the parent's imports instead). Paid once per worker per sweep; reported, not timed below.
    t0 = time.perf_counter()
    warm = iter(tasks[: 4 * workers])
    for _ in ex.stream(RowSimulator(), lambda n: [t for t, _ in zip(warm, range(1))]):
        pass
    warm_s = time.perf_counter() - t0

    infos: dict = {}
    register = _register(infos, plan)
    cells = {t.cell_id: t for t in tasks}
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.cell_id] = counts.get(t.cell_id, 0) + 1

    class _Cell:
        def __init__(self, t):
            self.cell_id, self.index, self.scenario = t.cell_id, t.cell_index, t.scenario
            self.params = {}

    from sweeps.spec.grid import expand_cells

    by_id = {c.cell_id: c for c in expand_cells(spec, MODEL_VERSION)}
    for cid, n in counts.items():
        register(by_id.get(cid) or _Cell(cells[cid]), n)
    it = iter(tasks)

    def take(n):
        out = []
        for t in it:
            out.append(t)
            if len(out) >= n:
                break
        return out

    writer = storage.DatasetWriter(
        output, spec.name, S.file_schema(plan.param_types, plan.cpu_keys),
        provenance(sweep=spec.name, sweep_hash=spec.sweep_hash, seed=spec.seed, model_version=MODEL_VERSION,
                   execution_id="bench", sweep_file="bench"),
    )
    result = RunResult(0)

    class _Quiet:
        def advance(self, *a, **k):
            pass

    class _NoFeed:
        def on_result(self, *a):
            pass

    build = _row_builder("bench", MODEL_VERSION, plan, infos)
    t0 = time.perf_counter()
    for batch in ex.stream(RowSimulator(), take, on_idle=writer.tick):
        _consume(batch, _NoFeed(), build, writer, _Quiet(), infos, result)
    writer.close()
    wall = time.perf_counter() - t0
    ex.close()
    assert result.rows_run == len(tasks), result.rows_run
    return {"start_s": start_s, "warm_s": warm_s, "wall_s": wall, "write_s": writer.write_seconds, "files": len(writer.files_written)}


def bench_write_100k(plan, spec, output: Path, rows: int = 100_000) -> float:
    """Seconds to coalesce and write `rows` realistic result rows (what the driver adds per sweep)."""
    from sweeps.storage import schema as S
    from sweeps.storage import dataset as storage

    schema = S.file_schema(plan.param_types, plan.cpu_keys)
    row = {f.name: None for f in schema}
    row.update(policy_name="upstream_4_19", policy_options="{}", cell_id="0123456789abcdef", cell_index=3,
               seed=2**62, execution_id="e" * 32, model_version="0.1.0", scenario_json="{" + "x" * 1500 + "}",
               lockup=False, lockup_reason="", max_stall_s=0.5, kills=1, status="ok", error="", wall_s=0.04,
               node_id="n" * 56, worker_pid=1234)
    writer = storage.DatasetWriter(output, "write100k", schema, {"seed": 1})
    t0 = time.perf_counter()
    for start in range(0, rows, 200):
        writer.add("upstream_4_19", [{**row, "replicate": i} for i in range(start, start + 200)])
    writer.close()
    return time.perf_counter() - t0


def bench_mlflow_100k(spec, rows_dir: Path, output: Path, rows: int = 100_000) -> tuple[float, int]:
    """Seconds for sweeps.tracking.mlflow_log.log_sweep over `rows` rows (the real rows, tiled over replicates)."""
    import uuid

    import pyarrow as pa

    from sweeps.storage import dataset as storage
    from sweeps.tracking.mlflow_log import log_sweep

    table = storage.read_table(rows_dir, spec.name).drop_columns(["sweep"])
    reps = int(max(table.column("replicate").to_pylist())) + 1
    for policy in set(table.column("policy").to_pylist()):
        part = table.filter(pa.compute.equal(table.column("policy"), policy)).drop_columns(["policy"])
        schema = pa.schema([f for f in part.schema])
        writer = storage.DatasetWriter(output, spec.name, schema, {"seed": spec.seed}, flush_rows=50_000)
        k = 0
        n = 0
        per_policy = rows // len(set(table.column("policy").to_pylist()))
        while n < per_policy:
            shifted = part.set_column(part.schema.get_field_index("replicate"), "replicate",
                                      pa.compute.add(part.column("replicate"), k * reps))
            writer.add(policy, shifted.slice(0, per_policy - n).to_pylist())
            n += min(part.num_rows, per_policy - n)
            k += 1
        writer.close()
    n = storage.read_table(output, spec.name, columns=["cell_id"]).num_rows
    uri = f"sqlite:///{output.resolve() / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(output)  # with a sqlite store, MLflow puts artifacts under ./mlruns of the working directory
    try:
        t0 = time.perf_counter()
        log_sweep(output.resolve(), spec.name, tracking_uri=uri, spec=spec, execution_id=uuid.uuid4().hex)
        return time.perf_counter() - t0, n
    finally:
        os.chdir(cwd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=Path, default=ROOT / "configs" / "quick.yaml")
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)

    spec, plan, tasks = sweep_rows(args.sweep, args.rows)
    print(f"{len(tasks)} rows of sweep {spec.name!r} on {args.workers} workers ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        serial = bench_serial(tasks)
        pool = bench_pool(tasks, args.workers)
        ray_ = bench_oomsweep(spec, plan, tasks, args.workers, Path(tmp) / "ray")
        write100k = bench_write_100k(plan, spec, Path(tmp) / "w")
        mlflow100k, mlflow_rows = bench_mlflow_100k(spec, Path(tmp) / "ray", Path(tmp) / "m")

    n = len(tasks)
    print()
    print(f"{'way':<34}{'wall s':>9}{'rows/s':>10}{'vs serial':>11}{'vs Pool':>9}")
    for name, wall in (
        ("serial loop", serial),
        (f"multiprocessing.Pool({args.workers}), chunked", pool),
        ("oomsweep executor on local Ray", ray_["wall_s"]),
    ):
        print(f"{name:<34}{wall:>9.2f}{n / wall:>10.1f}{serial / wall:>10.2f}x{pool / wall:>8.2f}x")
    print(f"  Ray start-up and worker warm-up (once per sweep, not included above): {ray_['start_s']:.1f} s + "
          f"{ray_['warm_s']:.1f} s")
    print(f"  incl. both: oomsweep {n / (ray_['wall_s'] + ray_['start_s'] + ray_['warm_s']):.1f} rows/s")
    share = ray_["write_s"] / ray_["wall_s"]
    print(f"Parquet writing: {ray_['write_s']:.3f} s of {ray_['wall_s']:.2f} s = {100 * share:.2f} % "
          f"({ray_['files']} files)")
    per_row = ray_["wall_s"] / n
    projected = 100_000 * per_row
    print(f"100,000 rows: writing took {write100k:.2f} s; the sweep would take ~{projected:.0f} s at this rate "
          f"-> Parquet {100 * write100k / projected:.2f} % of the wall time")
    print(f"MLflow logging of {mlflow_rows} rows (sqlite, parent + per-policy + per-cell runs, plots): "
          f"{mlflow100k:.1f} s -> Parquet + MLflow {100 * (write100k + mlflow100k) / projected:.2f} % of the wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""--dry-run: the rows it times are a seeded random sample of the whole grid, not its first cell."""

from __future__ import annotations

from sweeps.run.runner import sample_pending_rows
from sweeps.spec.parse import load_sweep


def test_dry_run_sample_is_drawn_from_every_cell(write_sweep, tmp_path) -> None:
    path = write_sweep(tmp_path, grid={"victim.sched_at_handover": ["unchanged", "idle"],
                                       "machine.rt_runtime_share": [True, False]}, replicates=50)
    spec = load_sweep(path)
    sample, pending = sample_pending_rows(spec, 40)
    assert pending == 4 * 2 * 50 and len(sample) == 40
    assert len({t.cell_id for t in sample}) == 4  # not the first cell's first rows
    assert len({(t.cell_id, t.policy, t.replicate) for t in sample}) == 40
    again, _ = sample_pending_rows(spec, 40)
    assert [t.seed for t in again] == [t.seed for t in sample]  # seeded: the same sample each time


def test_dry_run_sample_skips_stored_rows(write_sweep, tmp_path) -> None:
    spec = load_sweep(write_sweep(tmp_path, replicates=3))
    everything, pending = sample_pending_rows(spec, 1000)
    assert pending == len(everything) == 2 * 2 * 3
    stored = {(t.cell_id, t.policy, t.replicate) for t in everything[:5]}
    rest, pending = sample_pending_rows(spec, 1000, stored)
    assert pending == 7 and not stored & {(t.cell_id, t.policy, t.replicate) for t in rest}


def test_a_run_after_its_dry_run_says_and_records_how_far_the_estimate_was_off(write_sweep, tmp_path) -> None:
    """Serial executor in-process (no Ray, no subprocess): the dry run's estimate is left for the
    run, which prints estimate vs actual and stores both in its execution record."""
    import io

    from sweeps.run.runner import RunOptions, run_sweep
    from sweeps.storage import executions

    path = write_sweep(tmp_path, replicates=2)
    output = tmp_path / "results"
    opts = dict(output=str(output), no_mlflow=True, executor="serial")
    dry = io.StringIO()
    assert run_sweep(path, RunOptions(dry_run=True, **opts), stdout=dry, stderr=io.StringIO()).exit_code == 0
    assert "dry run: estimated wall time" in dry.getvalue()
    err = io.StringIO()
    res = run_sweep(path, RunOptions(**opts), stdout=io.StringIO(), stderr=err)
    assert res.exit_code == 0
    assert "the dry run estimated" in err.getvalue() and "they took" in err.getvalue()
    (record,) = executions.read_records(output, res.sweep)
    est = record["dry_run_estimate"]
    assert est["rows"] == 2 * 2 * 2 and est["actual_s"] > 0 and est["low_s"] <= est["seconds"] <= est["high_s"]
    # off_percent = (estimate - actual) / actual, of the unrounded times (each stored to 0.1 s)
    assert abs(est["seconds"] - est["actual_s"] * (1 + est["off_percent"] / 100)) <= 0.15


def test_a_ray_start_that_times_out_is_tried_once_more_then_said_in_one_line(monkeypatch) -> None:
    """Ray waits a hard-coded 30 s for its raylet; on a loaded machine that start fails with a bare
    Exception. The run and the dry run try once more, then stop with one line (RunFailure, exit 1)."""
    import pytest

    from sweeps.errors import RunFailure
    from sweeps.execution.ray_executor import RayExecutor
    from sweeps.run import runner

    tries = []

    def timing_out(self):
        tries.append(self)
        if len(tries) < 2:
            raise Exception("The current node timed out during startup. This could happen because ...")
        return self

    import ray

    # _start_ray shuts a half-started Ray down before its second try: here that would be the test
    # session's shared Ray, which later tests still use (their node_id must stay the session's)
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: None)
    monkeypatch.setattr(RayExecutor, "start", timing_out)
    started = runner._start_ray(runner.RunOptions(), fail_fast=False)
    assert started is tries[-1] and len(tries) == 2  # the second try is the executor used

    def always(self):
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(RayExecutor, "start", always)
    with pytest.raises(RunFailure, match=r"local Ray did not start \(2 tries; last: The current node timed out"):
        runner._start_ray(runner.RunOptions(), fail_fast=False)

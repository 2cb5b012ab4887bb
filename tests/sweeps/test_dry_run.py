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

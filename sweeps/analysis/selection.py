"""Which stored rows a table is about: the current configuration of a sweep, or every execution.

A sweep's output keeps every row it ever computed. Rerun under the same name after changing a grid
value or a base key and the dataset holds several configurations: pooling them silently mixes
estimates of different questions (n = 120, p = 0.30 where the run itself saw n = 80, p = 0.25).
So `report`, `compare` (and anything else that summarises a sweep) select by default the rows of
the latest execution's configuration: its cells (cell ids hash the full scenario, so a changed
base key changes every cell), its policies and its replicate range, as recorded in its execution
record (sweeps.storage.executions), which is exactly what that run's own final table showed. Pooling every
configuration is a choice (`--all-executions`), and then the header says how many configurations
(sweep-file hashes, base scenarios) are pooled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.storage import executions
from sweeps.storage.dataset import readable_files


@dataclass(frozen=True)
class Selection:
    """A row filter for storage.read_table / read_sweep and the words that say what it keeps."""

    filter: Any  # a pyarrow.dataset expression, or None for every row
    header: str  # one line for the top of the table
    notes: tuple[str, ...] = field(default_factory=tuple)  # stderr lines: what is left out or pooled
    execution_id: str | None = None  # the execution whose configuration is shown (None: all rows)


def _stored_rows(output: str | Path, sweep: str) -> int:
    """Rows in the readable files, from their footers (no column is read)."""
    import pyarrow.parquet as pq

    total = 0
    for f in readable_files(output, sweep, on_bad=None):
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except OSError:
            pass
    return total


def _reps_text(rec: dict[str, Any]) -> str:
    reps = rec.get("replicates")
    if not reps:
        return "adaptive replicates"
    start, stop = int(reps[0]), int(reps[1])
    return f"replicates {start}..{stop - 1}"


def select(output: str | Path, sweep: str, *, all_executions: bool = False) -> Selection:
    """The rows a summary of `sweep` should show; see the module docstring."""
    import pyarrow.dataset as pds

    records = executions.read_records(output, sweep)
    with_cells = [r for r in records if r.get("cells")]
    if all_executions or not with_cells:
        notes: list[str] = []
        configs = {(r.get("sweep_hash"), r.get("base_hash")) for r in records if r.get("rows_written", 0) or
                   r.get("state") == "running"}
        if all_executions and len(configs) > 1:
            bases = {b for _, b in configs}
            notes.append(
                f"note: pooling the rows of {len(configs)} configurations of sweep {sweep} (sweep-file hashes "
                f"{', '.join(sorted(str(h)[:12] for h, _ in configs))}"
                + (f"; {len(bases)} different base scenarios" if len(bases) > 1 else "")
                + "): each estimate mixes them")
        if not all_executions:
            notes.append(f"note: {output} has no execution records for sweep {sweep} (rows written before "
                         f"oomsweep recorded configurations): every stored row is pooled")
        return Selection(None, f"all stored rows of sweep {sweep} (every execution)", tuple(notes))
    latest = with_cells[-1]
    flt = pds.field("cell_id").isin(latest["cells"]) & pds.field("policy").isin(latest["policies"])
    reps = latest.get("replicates")
    if reps:
        flt = flt & (pds.field("replicate") >= int(reps[0])) & (pds.field("replicate") < int(reps[1]))
    header = (f"the current configuration of sweep {sweep}: {len(latest['cells'])} cells × "
              f"{len(latest['policies'])} policies, {_reps_text(latest)}, as last run by execution "
              f"{latest['execution_id'][:12]} ({str(latest.get('started', ''))[:19].replace('T', ' ')} UTC, "
              f"sweep file {latest.get('sweep_file', '?')}, hash {str(latest.get('sweep_hash', ''))[:12]})")
    return Selection(flt, header, (), latest["execution_id"])


def left_out_note(output: str | Path, sweep: str, selection: Selection, rows_shown: int) -> str | None:
    """"k stored rows of other configurations are not shown" when the default selection drops any."""
    if selection.filter is None:
        return None
    other = _stored_rows(output, sweep) - rows_shown
    if other <= 0:
        return None
    return (f"note: {other} stored rows of sweep {sweep} belong to other configurations, replicate ranges "
            f"or policies (earlier versions of the sweep file) and are not shown; --all-executions pools them")

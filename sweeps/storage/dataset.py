"""The Parquet dataset: `output/sweep=<name>/policy=<label>/<unique>.parquet`.

Why it is built this way (see ecosystem.md §3):
- Arrow writes are not transactional, so every file is written under a
  dot-prefixed ``.tmp`` name and `os.replace`'d into place; pyarrow and pandas
  skip dot-prefixed files and a ``**/*.parquet`` glob (DuckDB) does not match
  ``.tmp``, so no reader ever sees a half-written file.
- File names are unique (time + uuid): appending can never overwrite.
- Results are coalesced in memory (`DatasetWriter`) so files hold tens of
  thousands of rows, flushed every `flush_rows` rows, every `flush_seconds`,
  and at the end.
- Every file carries the provenance JSON (sweep hash, seed, versions) in its
  schema metadata; resume reads only the key columns.
- A run holds an exclusive lock on its sweep directory (`SweepLock`, flock: the
  kernel drops it when the process dies, even by SIGKILL), so two runs of one
  sweep cannot write the same rows twice, and the next run can safely delete
  the ``.tmp`` files a killed run left behind (`sweeps.storage.lock`).
- A failed write (ENOSPC, EIO...) removes its ``.tmp`` file and raises
  `StorageWriteError`; complete files stay complete.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from sweeps.errors import StorageError, StorageWriteError, UsageError
from sweeps.storage.schema import IDENTITY_FIELDS, KEY_COLUMNS, OUTCOME_FIELDS, PROVENANCE_KEY, SCHEMA_VERSION, dataset_schema

KEY_FIELDS = tuple(f for f in IDENTITY_FIELDS if f.name in KEY_COLUMNS)

TMP_SUFFIX = ".tmp"


def clean_stale_tmp(output: str | Path, sweep: str) -> int:
    """Delete the ``.tmp`` files a killed run of this sweep left behind; call it holding SweepLock."""
    root = sweep_dir(output, sweep)
    n = 0
    if not root.is_dir():
        return 0
    for pdir in root.iterdir():
        if pdir.is_dir() and (pdir.name.startswith("policy=") or pdir.name == "_executions"):
            for f in pdir.iterdir():
                if f.name.startswith(".") and f.name.endswith(TMP_SUFFIX):
                    try:
                        f.unlink()
                        n += 1
                    except FileNotFoundError:
                        pass
    return n


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def sweep_dir(output: str | Path, sweep: str) -> Path:
    return Path(output) / f"sweep={_quote(sweep)}"


def _missing_dirs(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename into it survives a power cut, not only a process kill.

    POSIX makes the rename atomic but durable only once the directory entry is on disk; on
    filesystems that refuse to open or fsync a directory (some network mounts) this is skipped.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partition_dir(output: str | Path, sweep: str, policy: str) -> Path:
    return sweep_dir(output, sweep) / f"policy={_quote(policy)}"


def _visible(path: Path) -> bool:
    return path.suffix == ".parquet" and not path.name.startswith((".", "_"))


def list_files(output: str | Path, sweep: str | None = None) -> list[Path]:
    """Visible (complete) Parquet files of one sweep, or of all sweeps."""
    roots = [sweep_dir(output, sweep)] if sweep is not None else list_sweep_dirs(output)
    files: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for pdir in sorted(root.iterdir()):
            if pdir.is_dir() and pdir.name.startswith("policy="):
                files += sorted(p for p in pdir.iterdir() if _visible(p))
    return files


def list_sweep_dirs(output: str | Path) -> list[Path]:
    root = Path(output)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sweep="))


def list_sweeps(output: str | Path) -> list[str]:
    """Names of the sweeps stored under `output` (those with at least one file)."""
    names = []
    for d in list_sweep_dirs(output):
        name = urllib.parse.unquote(d.name[len("sweep=") :])
        if list_files(output, name):
            names.append(name)
    return names


CORRUPT_SUFFIX = ".corrupt"  # `.part-….parquet.corrupt`: the dot hides it from pyarrow and pandas, the suffix from `*.parquet`


def error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def file_problem(path: str | Path) -> str | None:
    """Why a visible part file cannot be read as oomsweep rows (its footer, its key columns), or None.

    Reads only the footer. A file whose footer is fine but whose data pages are damaged is found
    when its columns are read (`read_table` then names it) or by `oomsweep verify`.
    """
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        return f"not a readable Parquet file ({error_text(e).split('. ')[0].rstrip('.')})"
    missing = [c for c in KEY_COLUMNS if c not in schema.names]
    if missing:
        return f"not an oomsweep result file (no column {', '.join(missing)})"
    for declared in KEY_FIELDS:  # other columns are unified permissively (int64 and double, string and null)
        i = schema.get_field_index(declared.name)
        if i >= 0 and _kind(schema.field(i).type) != _kind(declared.type):
            return (f"not an oomsweep result file (column {declared.name} is {schema.field(i).type}, "
                    f"the schema declares {declared.type})")
    return None


def _kind(t: pa.DataType) -> str:
    """The family of a type: readers unify string/large_string, int32/int64 etc., not across families."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    for name, test in (("string", pa.types.is_string), ("string", pa.types.is_large_string),
                       ("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("bool", pa.types.is_boolean), ("null", pa.types.is_null)):
        if test(t):
            return name
    return str(t)


def warn_skipped(path: Path, cause: str) -> None:
    """Default for readers: a file that cannot be read is skipped, named on one line of stderr."""
    import sys

    print(f"oomsweep: warning: skipping {path}: {cause}; its rows are left out (`oomsweep run` of the sweep "
          f"sets the file aside and recomputes them; `oomsweep verify` checks every file)", file=sys.stderr)


def readable_files(output: str | Path, sweep: str, on_bad: Any = warn_skipped) -> list[Path]:
    """The visible files of one sweep whose footer and key columns are sound; `on_bad(path, cause)`
    is called for each of the others (default: a warning on stderr)."""
    good = []
    for f in list_files(output, sweep):
        cause = file_problem(f)
        if cause is None:
            good.append(f)
        elif on_bad is not None:
            on_bad(f, cause)
    return good


def set_aside(path: Path) -> Path:
    """Rename a bad part file out of every reader's sight, keeping it: `.<name>.corrupt`."""
    target = path.with_name(f".{path.name}{CORRUPT_SUFFIX}")
    os.replace(path, target)
    fsync_dir(path.parent)
    return target


def policy_of(path: Path) -> str:
    return urllib.parse.unquote(path.parent.name[len("policy=") :])
def pick_sweep(output: str | Path, sweep: str | None) -> str:
    """The sweep a reading command works on: the one named (it must be stored), else the only one.

    A name that is not stored, or several sweeps and no name, is the user's to fix (UsageError,
    with the closest stored name).
    """
    names = list_sweeps(output)
    if sweep:
        if sweep not in names:
            import difflib

            m = difflib.get_close_matches(sweep, names, n=1)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise UsageError(f"--sweep: no sweep {sweep!r} in {output}{hint}; stored: {', '.join(names) or 'none'}")
        return sweep
    if not names:
        raise UsageError(f"{output}: no sweep results here")
    if len(names) > 1:
        raise UsageError(f"{output} holds several sweeps ({', '.join(names)}); choose one with --sweep")
    return names[0]


def read_provenance(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def check_sweep_seed(output: str | Path, sweep: str, seed: int) -> None:
    """Refuse to add rows to a stored sweep that was run with a different seed.

    Stored rows are skipped by key on resume; with a different seed those rows
    would silently carry draws from another seed.
    """
    for f in readable_files(output, sweep, on_bad=None):  # a bad file is set aside or skipped elsewhere
        stored = read_provenance(f).get("seed")
        if stored is not None and int(stored) != int(seed):
            raise StorageError(
                f"seed: sweep {sweep!r} in {output} was run with seed {stored}, this file says {seed}; "
                f"use a new sweep name or a new output directory (stored rows would otherwise be reused)"
            )


def check_sweep_schema(output: str | Path, sweep: str) -> None:
    """Refuse to add rows to a stored sweep written with another result schema version.

    Reading an older sweep works (schema.py says how each version reads); appending to it would
    mix two meanings of a column in one dataset (version 1's `lockup_reason` is "label: detail",
    version 2's the label alone), so it is refused with what to do instead.
    """
    for f in readable_files(output, sweep, on_bad=None):  # a bad file is set aside or skipped elsewhere
        stored = int(read_provenance(f).get("schema_version", 1))
        if stored != SCHEMA_VERSION:
            raise StorageError(
                f"schema_version: sweep {sweep!r} in {output} was written with result schema {stored}, "
                f"this oomsweep writes schema {SCHEMA_VERSION} (see sweeps/storage/schema.py); it can still "
                f"be read and reported, but to run it use a new sweep name or a new output directory"
            )


def _unified_schema(files: Sequence[Path]) -> pa.Schema:
    """The files' schemas unified; Outcome columns that older files lack are added (read as null)."""
    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    previous = ""
    for field in OUTCOME_FIELDS:     # schema 1 had no lockup_detail: it goes after lockup_reason
        if field.name not in schema.names:
            at = schema.get_field_index(previous) if previous else -1
            schema = schema.insert(at + 1, field) if at >= 0 else schema.append(field)
        previous = field.name
    return schema


def open_dataset(output: str | Path, sweep: str, files: Sequence[Path]) -> pds.Dataset:
    schema = _unified_schema(files)
    schema = dataset_schema(schema).remove(0)  # policy comes from the directory; sweep added below
    part = pds.partitioning(pa.schema([pa.field("policy", pa.string())]), flavor="hive")
    return pds.dataset(
        [str(f) for f in files],
        schema=schema,
        format="parquet",
        partitioning=part,
        partition_base_dir=str(sweep_dir(output, sweep)),
    )


def read_table(
    output: str | Path,
    sweep: str,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    exclude: Sequence[str] = (),
    on_bad: Any = warn_skipped,
) -> pa.Table:
    """Rows of one sweep as an Arrow table (partition columns included; `exclude` drops columns unread).

    A file that cannot be read (bad footer, no key columns, or damaged pages among the columns read)
    is left out and passed to `on_bad(path, cause)`: a warning by default; `run` sets it aside.
    """
    files = readable_files(output, sweep, on_bad)
    while True:
        if not files:
            return pa.table({"sweep": pa.array([], pa.string()), "policy": pa.array([], pa.string())})
        dset = open_dataset(output, sweep, files)
        cols = None
        wanted = columns
        if wanted is None and exclude:
            wanted = [c for c in dset.schema.names if c not in exclude]
        if wanted is not None:
            cols = [c for c in wanted if c != "sweep"]
            if "policy" not in cols:
                cols = ["policy", *cols]
        try:
            table = dset.to_table(columns=cols, filter=filter)
            break
        except (pa.ArrowException, OSError):
            bad = _damaged(output, sweep, files, cols)
            if not bad:
                raise
            for f, cause in bad.items():
                if on_bad is not None:
                    on_bad(f, cause)
            files = [f for f in files if f not in bad]
    return table.add_column(0, "sweep", pa.array([sweep] * table.num_rows, pa.string()))


def _damaged(output: str | Path, sweep: str, files: Sequence[Path], columns: Sequence[str] | None) -> dict[Path, str]:
    """Files whose `columns` cannot be decoded, each with the cause (a dataset scan does not say which)."""
    bad: dict[Path, str] = {}
    for f in files:
        try:
            names = pq.read_schema(f).names
            pq.read_table(f, columns=[c for c in (columns or names) if c in names], use_threads=False)
        except (pa.ArrowException, OSError, ValueError) as e:
            bad[f] = f"damaged data ({error_text(e)})"
    return bad


def read_sweep(output: str | Path, sweep: str, columns: Sequence[str] | None = None, exclude: Sequence[str] = (),
               filter: Any = None):
    """Rows of one sweep as a pandas DataFrame (all columns unless `columns` or `exclude` say otherwise;
    only the rows `filter` keeps, e.g. sweeps.selection's current configuration)."""
    return read_table(output, sweep, columns, filter=filter, exclude=exclude).to_pandas()


def read_keys(output: str | Path, sweep: str, extra: Sequence[str] = (), on_bad: Any = warn_skipped) -> pa.Table:
    """Only the key columns (policy, cell_id, replicate [+ extra]) of one sweep: what resume needs."""
    return read_table(output, sweep, columns=["policy", *KEY_COLUMNS, *extra], on_bad=on_bad)


def done_keys(output: str | Path, sweep: str, on_bad: Any = warn_skipped) -> set[tuple[str, str, int]]:
    """(cell_id, policy label, replicate) of every stored row of one sweep."""
    t = read_keys(output, sweep, on_bad=on_bad)
    if t.num_rows == 0:
        return set()
    return set(
        zip(
            t.column("cell_id").to_pylist(),
            t.column("policy").to_pylist(),
            t.column("replicate").to_pylist(),
        )
    )


class DatasetWriter:
    """Coalesces result rows per policy and writes them as whole Parquet files.

    Not thread-safe; used by the driver only (workers never write).
    """

    def __init__(
        self,
        output: str | Path,
        sweep: str,
        schema: pa.Schema,
        provenance: Mapping[str, Any],
        *,
        flush_rows: int = 20_000,
        flush_seconds: float = 10.0,
        compression: str = "zstd",
    ) -> None:
        self.output = Path(output)
        self.sweep = sweep
        self.schema = schema.with_metadata({PROVENANCE_KEY: json.dumps(dict(provenance), sort_keys=True).encode()})
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.compression = compression
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.files_written: list[Path] = []
        self.write_seconds = 0.0

    @property
    def buffered(self) -> int:
        return self._buffered

    def add(self, policy: str, rows: Iterable[Mapping[str, Any]]) -> None:
        buf = self._buffers.setdefault(policy, [])
        before = len(buf)
        buf.extend(rows)
        self._buffered += len(buf) - before
        self.tick()

    def tick(self) -> None:
        """Flush when enough rows are buffered or the buffer is old enough."""
        if self._buffered >= self.flush_rows or (
            self._buffered and time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        t0 = time.perf_counter()
        for policy, rows in self._buffers.items():
            if rows:
                self._write(policy, rows)
        self._buffers = {}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.write_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.flush()

    def _write(self, policy: str, rows: list[dict[str, Any]]) -> Path:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        pdir = partition_dir(self.output, self.sweep, policy)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:12]}"
        tmp = pdir / f".{name}.parquet{TMP_SUFFIX}"
        final = pdir / f"{name}.parquet"
        try:
            created = _missing_dirs(pdir)
            pdir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression=self.compression)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            for d in (pdir, *(c.parent for c in created)):  # the new entry, and each new directory's
                fsync_dir(d)
        except OSError as e:
            raise StorageWriteError(e.errno, f"cannot write {final}: {e.strerror or e}") from e
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass
        self.rows_written += table.num_rows
        self.files_written.append(final)
        return final

"""Corrupt files in the dataset: a truncated part file, one zeroed whole, one whose data pages are
zeroed under an intact footer.

Readers (report, compare, history, log, run --dry-run) name each bad file on one line and go on
without its rows; `verify` lists them and exits 1; `run` sets them aside (kept, renamed so that no
reader sees them) and recomputes exactly their rows, after which the dataset equals an undisturbed
run's, row for row.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from sweeps.cli import main

from rel_helpers import assert_exactly_once, handa_sweep, read_keys_everywhere

pytestmark = pytest.mark.timeout(300)

OUTCOME = ["cell_id", "policy", "replicate", "seed", "status", "lockup", "max_stall_s", "kills", "sim_events"]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


def _rows(output: Path) -> pd.DataFrame:
    df = read_keys_everywhere(output, "rel")
    full = pd.read_parquet(output / "sweep=rel")
    full["policy"] = full["policy"].astype(str)
    assert len(full) == len(df)
    return full[OUTCOME].sort_values(["cell_id", "policy", "replicate"]).reset_index(drop=True)


def _damage(files: list[Path]) -> dict[Path, str]:
    """Three real kinds of damage; returns file -> kind."""
    truncated, zeroed, pages = files[0], files[1], files[2]
    os.truncate(truncated, truncated.stat().st_size // 2)
    zeroed.write_bytes(b"\0" * zeroed.stat().st_size)
    footer = pq.ParquetFile(pages).metadata
    with open(pages, "r+b") as fh:  # every column chunk's pages, the footer left intact
        for rg in range(footer.num_row_groups):
            for c in range(footer.num_columns):
                col = footer.row_group(rg).column(c)
                start = col.dictionary_page_offset or col.data_page_offset
                fh.seek(start)
                fh.write(b"\0" * col.total_compressed_size)
    return {truncated: "truncated", zeroed: "zeroed", pages: "pages"}


def test_corrupt_part_files_are_named_skipped_set_aside_and_recomputed(tmp_path, capsys):
    ref_path = handa_sweep(tmp_path, replicates=6, output=str(tmp_path / "ref"))
    assert _run(["run", str(ref_path), "--serial", "--no-mlflow"], capsys)[0] == 0
    reference = _rows(tmp_path / "ref")

    out = tmp_path / "results"
    path = handa_sweep(tmp_path, replicates=6, output=str(out))
    # a file per batch, so that damaging some files loses only some rows
    code, _, err = _run(["run", str(path), "--serial", "--no-mlflow", "--flush-seconds", "0"], capsys)
    assert code == 0, err
    files = sorted((out / "sweep=rel").rglob("*.parquet"))
    by_policy: dict[Path, list[Path]] = {}
    for f in files:
        by_policy.setdefault(f.parent, []).append(f)
    victims = [f for fs in by_policy.values() for f in fs[:-1]][:3]  # each policy keeps a file (compare pairs them)
    assert len(victims) == 3, files
    lost = sum(pq.ParquetFile(f).metadata.num_rows for f in victims)
    bad = _damage(victims)

    # every reader names each bad file once, on one line, and goes on without its rows
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for argv in (["report", str(out)], ["compare", str(out), "upstream_4_19", "timeout_backoff"],
                 ["history", str(out)], ["run", str(path), "--dry-run", "--serial"],
                 ["log", str(out), "--mlflow-uri", mlflow_uri]):
        code, stdout, err = _run(argv, capsys)
        assert code == 0, (argv, err)
        for f in bad:
            named = [l for l in err.splitlines() if str(f) in l]
            assert named and all(l.startswith("oomsweep: warning: skipping ") for l in named), (argv, err)
        if argv[0] == "report":
            assert re.search(rf"sweep rel: (.*: )?{24 - lost} rows, ", stdout), stdout
        if argv[0] == "run":  # a dry run's plan is on stdout
            assert f"{24 - lost} stored, {lost} to run" in stdout, stdout

    # verify names them too, with the cause, and exits 1
    code, stdout, err = _run(["verify", str(out)], capsys)
    assert code == 1, (stdout, err)
    for f, kind in bad.items():
        line = next(l for l in stdout.splitlines() if l.startswith(str(f)))
        assert ("damaged data" if kind == "pages" else "not a readable Parquet file") in line, line

    # the run sets them aside (kept), recomputes exactly their rows, and the result is the undisturbed one
    code, _, err = _run(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 0, err
    for f in bad:
        kept = f.with_name(f".{f.name}.corrupt")
        assert not f.exists() and kept.exists(), f
        assert f"set aside {f}" in err
    assert f"{24 - lost} stored, {lost} to run" in err, err
    assert f"rows={lost} " in err, err
    assert_exactly_once(read_keys_everywhere(out, "rel"), 24)
    pd.testing.assert_frame_equal(_rows(out), reference)

    code, stdout, err = _run(["verify", str(out)], capsys)
    assert code == 0 and "24 rows: ok" in stdout and stdout.count("set aside by an earlier run") == 3, stdout
    code, _, err = _run(["report", str(out)], capsys)
    assert code == 0 and "warning" not in err, err


def test_a_foreign_parquet_file_is_named_and_skipped(tmp_path, capsys):
    out = tmp_path / "results"
    path = handa_sweep(tmp_path, replicates=2, output=str(out))
    assert _run(["run", str(path), "--serial", "--no-mlflow"], capsys)[0] == 0
    foreign = out / "sweep=rel" / "policy=upstream_4_19" / "notes.parquet"
    pd.DataFrame({"cell_id": [1, 2], "replicate": [0, 1]}).to_parquet(foreign)  # cell_id is not a string

    code, stdout, err = _run(["report", str(out)], capsys)
    assert code == 0 and re.search(r"sweep rel: (.*: )?8 rows, ", stdout), stdout
    assert f"skipping {foreign}: not an oomsweep result file (column cell_id is int64" in err, err
    code, stdout, _ = _run(["verify", str(out)], capsys)
    assert code == 1 and f"{foreign}: not an oomsweep result file" in stdout

"""A sweep file changed and rerun under the same name and output: no silent pooling.

Change a grid value, then a base key that is not a grid key, rerunning each time. `report` and
`compare` show the current configuration (the latest execution's cells, policies, replicates),
which is exactly what that run's own final table showed, say so in their header, and say how many
stored rows they leave out; `--all-executions` pools every row on purpose and names the
configurations it mixes. Checked against an independent DuckDB count over the Parquet files.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from sweeps.cli import main

from rel_helpers import HANDA, handa_sweep

pytestmark = pytest.mark.timeout(300)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


def _table(out: str) -> dict[str, tuple[int, int]]:
    """policy -> (n, lockups) from a printed per-policy table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0] in ("upstream_4_19", "timeout_backoff") and parts[1].isdigit():
            rows[parts[0]] = (int(parts[1]), int(parts[2]))
    return rows


def _duckdb(out: Path, where: str = "TRUE") -> dict[str, tuple[int, int]]:
    got = duckdb.sql(
        f"SELECT policy, count(*), sum(lockup::INT) FROM read_parquet('{out}/**/*.parquet', hive_partitioning=true,"
        f" union_by_name=true) WHERE status = 'ok' AND ({where}) GROUP BY policy").fetchall()
    return {p: (int(n), int(k)) for p, n, k in got}


def test_changed_grid_value_and_base_key_are_not_pooled(tmp_path, capsys):
    out = tmp_path / "results"
    grid = {"reaper.busy_elsewhere_p": [0.0, 0.3]}
    path = handa_sweep(tmp_path, replicates=5, output=str(out), grid=grid)

    code, first_table, _ = _run(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 0

    # 1. a grid value changes (0.3 -> 0.6): the new cell runs, the old one stays stored
    path = handa_sweep(tmp_path, replicates=5, output=str(out), grid={"reaper.busy_elsewhere_p": [0.0, 0.6]})
    code, run_out, run_err = _run(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 0 and "10 stored, 10 to run" in run_err, run_err
    run_table = _table(run_out)
    assert run_table["upstream_4_19"][0] == 10

    code, rep, err = _run(["report", str(out)], capsys)
    assert code == 0
    assert _table(rep) == run_table  # the run's own table, not a pooled one
    assert _table(rep) == _duckdb(out, '"reaper.busy_elsewhere_p" IN (0.0, 0.6)')
    assert "the current configuration of sweep rel: 2 cells × 2 policies, replicates 0..4" in rep, rep
    assert "note: 10 stored rows of sweep rel belong to other configurations" in err, err
    assert "--all-executions" in err

    code, cmp_out, _ = _run(["compare", str(out), "upstream_4_19", "timeout_backoff"], capsys)
    assert code == 0 and "over 10 paired (cell, replicate) rows; the current configuration" in cmp_out, cmp_out

    code, pooled, err = _run(["report", str(out), "--all-executions"], capsys)
    assert code == 0 and "all stored rows of sweep rel (every execution)" in pooled
    assert _table(pooled) == _duckdb(out) and _table(pooled)["upstream_4_19"][0] == 15
    assert "note: pooling the rows of 2 configurations of sweep rel" in err, err
    assert "different base scenarios" not in err

    # 2. a base key that is not a grid key changes (lockup_after_s 20 -> 30): every cell is new
    base = {**yaml.safe_load(HANDA.read_text()), "lockup_after_s": 30}
    path = handa_sweep(tmp_path, replicates=5, output=str(out), grid={"reaper.busy_elsewhere_p": [0.0, 0.6]},
                       base=base)
    code, run_out, run_err = _run(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 0 and "0 stored, 20 to run" in run_err, run_err
    code, rep, err = _run(["report", str(out)], capsys)
    assert _table(rep) == _table(run_out) and _table(rep)["upstream_4_19"][0] == 10
    assert "note: 30 stored rows of sweep rel belong to other configurations" in err, err
    code, pooled, err = _run(["compare", str(out), "upstream_4_19", "timeout_backoff", "--all-executions"], capsys)
    assert code == 0 and "over 25 paired" in pooled, pooled
    assert "pooling the rows of 3 configurations" in err and "2 different base scenarios" in err, err

    # 3. back to the first file: its rows are all stored, nothing runs, and it is current again
    path = handa_sweep(tmp_path, replicates=5, output=str(out), grid=grid)
    code, run_out, run_err = _run(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 0 and "nothing new to run" in run_err
    code, rep, _ = _run(["report", str(out)], capsys)
    assert _table(rep) == _table(first_table) == _duckdb(out, '"reaper.busy_elsewhere_p" IN (0.0, 0.3) AND '
                                                                  "scenario_json NOT LIKE '%\"lockup_after_s\":30%'")


def test_output_without_execution_records_pools_and_says_so(tmp_path, capsys):
    out = tmp_path / "results"
    path = handa_sweep(tmp_path, replicates=2, output=str(out))
    assert _run(["run", str(path), "--serial", "--no-mlflow"], capsys)[0] == 0
    for f in (out / "sweep=rel" / "_executions").iterdir():  # as written before records existed
        f.unlink()
    code, rep, err = _run(["report", str(out)], capsys)
    assert code == 0 and "sweep rel: 8 rows" in rep and "all stored rows" in rep
    assert "no execution records" in err and "every stored row is pooled" in err, err

"""`oomsweep run --replicate-block K`: a scheduled run of an unchanged sweep draws fresh seeds.

Serial executor in-process (no Ray), real Parquet: each block adds R new replicates per cell and
policy, a rerun of the same block adds nothing, and `history` sees the blocks as executions.
"""

from __future__ import annotations

import pyarrow.dataset as pds
import pytest

from sweeps.cli import main


def _rows(tmp_path):
    t = pds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table(
        columns=["cell_id", "policy", "replicate", "seed", "execution_id"]
    )
    return t.to_pylist()


@pytest.fixture
def sweep(write_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_sweep(tmp_path, replicates=2)


def test_blocks_add_fresh_replicates_and_a_rerun_adds_nothing(sweep, tmp_path, capsys):
    assert main(["run", str(sweep), "--serial", "--no-mlflow"]) == 0
    first = _rows(tmp_path)
    assert sorted({r["replicate"] for r in first}) == [0, 1]

    assert main(["run", str(sweep), "--serial", "--no-mlflow", "--replicate-block", "3"]) == 0
    err = capsys.readouterr().err
    assert "2 replicates (block 3: 6..7)" in err and "0 stored, 8 to run" in err
    rows = _rows(tmp_path)
    assert len(rows) == 2 * len(first)
    new = [r for r in rows if r["replicate"] >= 2]
    assert sorted({r["replicate"] for r in new}) == [6, 7]
    assert not {r["seed"] for r in new} & {r["seed"] for r in first}  # fresh draws
    assert len({r["execution_id"] for r in rows}) == 2
    keys = [(r["cell_id"], r["policy"], r["replicate"]) for r in rows]
    assert len(keys) == len(set(keys))

    # the same block again (a retried nightly job) resumes: nothing new
    assert main(["run", str(sweep), "--serial", "--no-mlflow", "--replicate-block", "3"]) == 0
    assert "8 stored, 0 to run" in capsys.readouterr().err
    assert len(_rows(tmp_path)) == len(rows)

    # history shows one line per policy per execution (the rerun stored nothing: no execution)
    assert main(["history", "results", "--sweep", "tiny"]) == 0
    hist = capsys.readouterr().out
    assert "replicates" in hist and " 0..1" in hist and " 6..7" in hist  # each execution's block
    lines = [ln.split() for ln in hist.splitlines()]
    assert sum(1 for ln in lines if "upstream_4_19" in ln) == 2
    assert sum(1 for ln in lines if "timeout_backoff" in ln) == 2


def test_the_final_table_counts_only_this_block(sweep, tmp_path, capsys):
    assert main(["run", str(sweep), "--serial", "--no-mlflow"]) == 0
    capsys.readouterr()
    assert main(["run", str(sweep), "--serial", "--no-mlflow", "--replicate-block", "1"]) == 0
    out = capsys.readouterr().out
    # 2 cells × 2 replicates of this block per policy, not the 8 stored in all
    assert any(line.split()[:2] == ["upstream_4_19", "4"] for line in out.splitlines())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--replicate-block", "-1"], "--replicate-block: must be an integer >= 0"),
        (["--replicate-block", "x"], "--replicate-block"),
        (["--replicate-block", str(2**62)], "--replicate-block: must be at most 4611686018427387903 with 2 replicates"),
    ],
)
def test_bad_block_exits_2_naming_the_flag(sweep, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        rc = main(["run", str(sweep), "--serial", "--no-mlflow", *extra])
        raise SystemExit(rc)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_adaptive_sweep_refuses_a_block(write_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, replicates={"ci_half_width": 0.2, "min": 2, "max": 4, "batch": 2})
    assert main(["run", str(path), "--serial", "--no-mlflow", "--replicate-block", "1"]) == 2
    assert "--replicate-block: needs a fixed `replicates`" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() or not _rows(tmp_path)


def test_mlflow_logs_the_block_of_the_run_and_log_backfills_it(write_sweep, tmp_path, monkeypatch, capsys):
    """A block's parent and policy runs summarise that block's rows (n = cells × R), live and by `log`."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    path = write_sweep(tmp_path, replicates=2, mlflow={"experiment": "blocks", "max_cell_runs": 0})
    live, later = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'later.db'}"
    assert main(["run", str(path), "--serial", "--no-mlflow"]) == 0  # block 0, not logged
    assert main(["run", str(path), "--serial", "--mlflow-uri", live, "--replicate-block", "5"]) == 0
    assert "MLflow tracking failed" not in capsys.readouterr().err
    assert main(["log", "results", "--sweep", "tiny", "--mlflow-uri", later]) == 0

    import statistics

    rows = pds.dataset(tmp_path / "results", format="parquet", partitioning="hive").to_table(
        columns=["policy", "replicate", "max_stall_s"]).to_pylist()
    medians = {p: statistics.median(r["max_stall_s"] for r in rows if r["policy"] == p and r["replicate"] >= 10)
               for p in ("upstream_4_19", "timeout_backoff")}
    assert medians != {p: statistics.median(r["max_stall_s"] for r in rows if r["policy"] == p and r["replicate"] < 2)
                       for p in medians}  # the blocks differ, so the check below can tell them apart
    for uri in (live, later):
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("blocks")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags
                   and "block 5: replicates 10..11" in r.data.params.get("replicates", "")]
        assert len(parents) == 1, [r.data.params.get("replicates") for r in runs]
        policy_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
                       and "policy" in r.data.params]
        assert {r.data.params["policy"] for r in policy_runs} == {"upstream_4_19", "timeout_backoff"}
        for r in policy_runs:
            assert r.data.metrics["n"] == 4  # 2 cells × replicates 10..11 of this block
            assert r.data.metrics["median_stall_s"] == pytest.approx(medians[r.data.params["policy"]])


def test_a_run_without_a_sweep_file_is_named_for_all_blocks_not_a_question_mark():
    # a calibrate sweep (or `oomsweep log` of a bare dataset) selects no block: its parent run said "block ?"
    from sweeps.tracking.mlflow_log import block_text

    assert block_text({}, None) == "all blocks"

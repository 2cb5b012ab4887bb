"""The `oomsweep` command line: exit codes, messages, report/compare/log, dry run, limits."""

from __future__ import annotations

import json

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeps.storage import dataset as storage
from sweeps.cli import main

HANDA = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "handa-2018-11-14.yaml"

pytestmark = pytest.mark.timeout(300)


def _bad(**kw) -> dict:
    d = {"name": "bad", "base": str(HANDA), "policies": ["upstream_4_19"], "replicates": 2, "seed": 1}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


BAD_SWEEPS = [
    (_bad(replicate=3), r"^replicate: unknown key \(did you mean 'replicates'\?\)"),
    (_bad(grid={"victim.sched_at_handovr": ["idle"]}), r"^grid\.victim\.sched_at_handovr: .*'victim\.sched_at_handover'"),
    (_bad(grid={"machine.cpus": []}), r"^grid\.machine\.cpus: "),
    (_bad(grid={"groups[0].sched.rt_priority": [50, 0]}), r"groups\[0\]\.sched\.rt_priority"),
    (_bad(policies=["upstream_4_91"]), r"^policies\[0\]: .*'upstream_4_19'"),
    (_bad(policies=[{"timeout_backoff": {"timeout_z": 2}}]), r"^policies\[0\]\.timeout_backoff\.timeout_z: .*'timeout_s'"),
    (_bad(seed=-1), r"^seed: "),
    (_bad(replicates=0), r"^replicates"),
    (_bad(base="no-such-scenario.yaml"), r"^base: "),
    (_bad(base={"machine": {"cpus": 0}}), r"^base\.machine\.cpus: "),
    (_bad(name="../escape"), r"^name: "),
    (_bad(replicates=None), r"^replicates: "),
]


@pytest.mark.parametrize("data,pattern", BAD_SWEEPS, ids=[p for _, p in BAD_SWEEPS])
def test_bad_sweep_files_exit_2_with_the_key_path(data, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    for argv in (["validate", str(path)], ["run", str(path), "--no-mlflow"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        message = err.split("error: ", 1)[1]
        import re

        assert re.search(pattern, message), message
        assert "Traceback" not in err
    assert not (tmp_path / "results").exists()  # failed before any work


@pytest.mark.slow
def test_bad_sweep_in_a_subprocess_has_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nbase: {HANDA}\npolicies: [nope]\nreplicates: 2\n")
    p = subprocess.run([sys.executable, "-m", "sweeps", "run", str(path)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("oomsweep run: error: policies[0]: ")
    assert "Traceback" not in p.stderr


def test_unreadable_yaml_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [\n")
    assert main(["validate", str(path)]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_validate_counts_rows(capsys):
    cfg = Path(__file__).resolve().parents[2] / "configs" / "handoff-vs-priority.yaml"
    assert main(["validate", str(cfg)]) == 0
    assert "12 cells × 5 policies × 200 replicates = 12000 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    "cfg", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_sweep_validates(cfg, capsys):
    """A sweep in configs/ that no longer validates (a renamed key, a new policy name) fails here."""
    assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err


def test_policies_lists_the_registry(capsys):
    from oommodel import POLICIES

    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    for name in POLICIES:
        assert name in out


def test_policies_shows_the_kernel_each_policy_stands_for(capsys):
    assert main(["policies"]) == 0
    blocks = capsys.readouterr().out.split("\nupstream_5_10")
    assert len(blocks) == 2
    assert blocks[1].splitlines()[2] == "    kernel base: 5.10.223 (Debian)"
    assert "    kernel base: 4.20-rc2 + RFC v2\n" in blocks[0]


@pytest.fixture
def stored(write_sweep, tmp_path, monkeypatch, capsys):
    """A small sweep run serially in-process (no Ray) into tmp_path/results; returns what `run` printed."""
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, replicates=3)
    assert main(["run", str(path), "--serial", "--no-mlflow"]) == 0
    return capsys.readouterr().out


def test_run_prints_the_policy_table_and_report_agrees(stored, tmp_path, capsys):
    out = stored
    assert "policy" in out and "upstream_4_19" in out and "timeout_backoff" in out
    assert main(["report", "results"]) == 0
    rep = capsys.readouterr().out
    assert "sweep tiny: every stored row, all blocks pooled (replicates 0..2, 1 execution(s)): 12 rows, 0 not ok" in rep
    assert out.strip().splitlines()[-2:] == rep.strip().splitlines()[-2:]  # same table rows
    assert main(["report", "results", "--by", "victim.sched_at_handover"]) == 0
    by = capsys.readouterr().out
    assert "idle" in by and "unchanged" in by
    assert main(["report", "results", "--by", "victim.sched_at_handovr"]) == 2
    assert "did you mean 'victim.sched_at_handover'" in capsys.readouterr().err
    assert main(["report", "results", "--sweep", "tinny"]) == 2
    assert "did you mean 'tiny'" in capsys.readouterr().err


def test_compare_is_paired(stored, capsys):
    capsys.readouterr()
    assert main(["compare", "results", "upstream_4_19", "timeout_backoff"]) == 0
    out = capsys.readouterr().out
    assert "over 6 paired (cell, replicate) rows" in out and "McNemar exact p" in out
    assert main(["compare", "results", "upstream_4_19", "nope"]) == 2


def test_rerun_with_another_seed_is_refused(stored, write_sweep, tmp_path, capsys):
    path = write_sweep(tmp_path, replicates=3, seed=12)
    capsys.readouterr()
    assert main(["run", str(path), "--serial", "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "seed: sweep 'tiny'" in err and "seed 11" in err
    assert len(storage.read_sweep(tmp_path / "results", "tiny")) == 12


def test_dry_run_estimates_on_stdout_and_writes_no_rows(write_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, replicates=50)
    assert main(["run", str(path), "--dry-run", "--serial"]) == 0
    out = capsys.readouterr().out
    assert "2 cells × 2 policies × 50 replicates = 200 rows" in out
    assert "dry run: timed " in out and "of 200 pending rows, drawn at random from every cell" in out
    assert "estimated wall time" in out and "95 % interval" in out
    assert not list((tmp_path / "results").rglob("*.parquet"))
    estimate = json.loads((tmp_path / "results" / ".oomsweep-estimate-tiny.json").read_text())
    assert estimate["rows"] == 200 and estimate["low_s"] <= estimate["seconds"] <= estimate["high_s"]
    # The real run compares itself with it and keeps it in its provenance.
    assert main(["run", str(path), "--serial", "--no-mlflow"]) == 0
    assert "the dry run estimated" in capsys.readouterr().err
    prov = storage.read_provenance(storage.list_files(tmp_path / "results", "tiny")[0])
    assert prov["dry_run_estimate"]["rows"] == 200


def test_large_grid_needs_yes(write_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, replicates=50)
    assert main(["run", str(path), "--max-rows", "100", "--no-mlflow"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_unreachable_tracking_store_still_completes_then_log_backfills(write_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, replicates=2)
    code = main(["run", str(path), "--serial", "--mlflow-uri", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("MLflow tracking failed") == 1
    assert "oomsweep log results --sweep tiny" in err
    assert len(storage.read_sweep(tmp_path / "results", "tiny")) == 8

    uri = f"sqlite:///{tmp_path / 'later.db'}"
    assert main(["log", "results", "--mlflow-uri", uri]) == 0
    assert "tiny execution" in capsys.readouterr().out
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name("tiny")
    assert exp is not None
    runs = MlflowClient(tracking_uri=uri).search_runs([exp.experiment_id])
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    # Logging again is idempotent.
    assert main(["log", "results", "--mlflow-uri", uri]) == 0
    assert "already logged" in capsys.readouterr().out
    assert len(MlflowClient(tracking_uri=uri).search_runs([exp.experiment_id])) == len(runs)
    assert not os.path.exists(tmp_path / "mlruns" / "0" / "meta.yaml")


def _raise_on_replicate_1(monkeypatch):
    from sweeps.run.row_task import RowSimulator

    real = RowSimulator.__call__

    def flaky(self, task):
        if task.replicate == 1 and task.policy == "timeout_backoff":
            raise RuntimeError("model bug")
        return real(self, task)

    monkeypatch.setattr(RowSimulator, "__call__", flaky)


def test_a_row_that_raises_is_recorded_and_the_sweep_goes_on(write_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _raise_on_replicate_1(monkeypatch)
    path = write_sweep(tmp_path, replicates=3)
    assert main(["run", str(path), "--serial", "--no-mlflow"]) == 1
    assert "2 rows have status != ok" in capsys.readouterr().err
    df = storage.read_sweep(tmp_path / "results", "tiny")
    assert len(df) == 12
    bad = df[df["status"] != "ok"]
    assert len(bad) == 2 and set(bad["replicate"]) == {1} and set(bad["policy"]) == {"timeout_backoff"}
    for _, row in bad.iterrows():
        assert row["error"].startswith("RuntimeError: model bug [cell ")
        assert f"seed {row['seed']}" in row["error"] and row["cell_id"] in row["error"]
        assert pd.isna(row["lockup"])
    # The table counts ok rows only.
    assert main(["report", "results"]) == 0
    assert "12 rows, 2 not ok" in capsys.readouterr().out


def test_fail_fast_stops_at_the_first_failing_row(write_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _raise_on_replicate_1(monkeypatch)
    path = write_sweep(tmp_path, replicates=3)
    assert main(["run", str(path), "--serial", "--no-mlflow", "--fail-fast"]) == 1
    err = capsys.readouterr().err
    assert "stopped by --fail-fast: RuntimeError: model bug [cell " in err
    df = storage.read_sweep(tmp_path / "results", "tiny")
    assert len(df) < 12 and (df["status"] == "ok").all()


def test_plain_progress_lines_and_summary():
    import io

    from sweeps.run.progress import Progress

    buf = io.StringIO()
    p = Progress(100, ["a", "b"], stream=buf, interval=0.0, tty=False, skipped=5)
    p.advance(10, {"a": 2})
    p.advance(15, {"b": 1}, failed=1)
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("oomsweep: 10/100 rows (10%)") and "lockups a=2 b=0" in lines[0]
    assert lines[1].startswith("oomsweep: 25/100 rows (25%)") and "failed 1" in lines[1]
    assert lines[-1].startswith("oomsweep: done: rows=25 failed=1 skipped=5") and lines[-1].endswith("a=2 b=1")


@pytest.mark.slow
def test_explain_on_a_small_saltelli_sweep_prints_a_box_and_logs_to_mlflow(write_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(
        tmp_path, name="disc", grid={}, policies=["handoff_rfc_v2", "upstream_4_19"], replicates=2,
        sample={"method": "saltelli", "n": 4, "seed": 3, "params": {
            "reaper.busy_elsewhere_p": {"uniform": [0.0, 0.3]},
            "victim.sched_at_handover": {"choice": ["unchanged", "idle"]},
        }},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(path), "--serial", "--mlflow-uri", uri]) == 0
    capsys.readouterr()
    argv = ["explain", "results", "--policy", "handoff_rfc_v2", "--against", "upstream_4_19",
            "--sweep-file", str(path), "--plots", "plots", "--mlflow-uri", uri]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "PRIM" in out and "keys ranked" in out and "Sobol indices" in out
    assert (tmp_path / "plots" / "prim_tradeoff_handoff_rfc_v2_not_upstream_4_19.png").stat().st_size > 0
    run_id = out.split("logged to MLflow parent run ")[1].split()[0]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    names = {a.path for a in client.list_artifacts(run_id, "explain")}
    assert "explain/explain_handoff_rfc_v2_not_upstream_4_19.txt" in names
    assert "explain/prim_tradeoff_handoff_rfc_v2_not_upstream_4_19.png" in names
    metrics = client.get_run(run_id).data.metrics
    assert 0 < metrics["explain.handoff_rfc_v2_not_upstream_4_19.box_density"] <= 1
    assert client.get_run(run_id).data.tags["oomsweep.role"] == "parent"
    # bad input: one line, exit 2, before any work
    assert main(["explain", "results", "--policy", "handoff_rfc_v3", "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "handoff_rfc_v3" in err and len(err.strip().splitlines()) == 1


def test_compare_by_says_the_adjustment(stored, capsys):
    capsys.readouterr()
    assert main(["compare", "results", "upstream_4_19", "timeout_backoff", "--by", "victim.sched_at_handover",
                 "--adjust", "fdr_bh"]) == 0
    out = capsys.readouterr().out
    assert "Benjamini-Hochberg" in out and "p_adj" in out and "idle" in out and "unchanged" in out
    assert "pairing" in out
    assert main(["compare", "results", "upstream_4_19", "timeout_backoff", "--by", "victim.sched_at_handovr"]) == 2

# ---------------------------------------------------------------------------------------------
# A bug is not bad input; a closed stdout is not an error


def test_an_internal_key_error_is_a_bug_not_bad_input(monkeypatch, capsys):
    """Only the project's input errors mean exit 2; a KeyError inside a command escapes main()
    (Python prints its traceback and exits 1)."""
    from sweeps.cli import commands

    def buggy(args):
        return {}["no-such-key"]

    monkeypatch.setitem(commands.COMMANDS, "policies", buggy)
    with pytest.raises(KeyError, match="no-such-key"):
        main(["policies"])
    assert "error:" not in capsys.readouterr().err


def test_an_input_error_from_a_library_module_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """`report --by` with no such column: UnknownColumn (sweeps.errors), not a bare KeyError."""
    from sweeps.cli import commands
    from sweeps.errors import UnknownColumn

    def report(args):
        raise UnknownColumn("machine.cpux: no such column (did you mean 'machine.cpus'?)")

    monkeypatch.setitem(commands.COMMANDS, "policies", report)
    assert main(["policies"]) == 2
    assert capsys.readouterr().err == (
        "oomsweep policies: error: machine.cpux: no such column (did you mean 'machine.cpus'?)\n")


@pytest.mark.slow
def test_an_internal_error_in_a_subprocess_is_a_traceback_and_exit_1(tmp_path):
    code = ("import sys\nfrom sweeps.cli import commands\n"
            "commands.COMMANDS['policies'] = lambda args: {}['no-such-key']\n"
            "sys.exit(commands.main(['policies']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 1
    assert "Traceback" in p.stderr and "KeyError: 'no-such-key'" in p.stderr
    assert "error:" not in p.stderr.splitlines()[0]


@pytest.mark.slow
def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`oomsweep policies | head -1`: no BrokenPipeError traceback, exit 141 (128 + SIGPIPE)."""
    p = subprocess.Popen([sys.executable, "-m", "sweeps", "policies"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=tmp_path)
    p.stdout.close()  # the reader is gone before the first line is written: EPIPE for certain
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert err == ""
    sh = subprocess.run(["bash", "-c", f"'{sys.executable}' -m sweeps policies | head -1"], capture_output=True,
                        text=True, cwd=tmp_path, timeout=120)
    assert sh.returncode == 0 and sh.stderr == "" and len(sh.stdout.splitlines()) == 1, sh.stderr

"""Bad input, round 2 (issue 10): cases a hostile user found that were accepted or misreported.

Each gives exit 2 and one line naming the key path (or the file and the lines), before any work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps.cli import main

from rel_helpers import HANDA, handa_sweep

pytestmark = pytest.mark.timeout(120)


def _one_error(argv: list[str], capsys) -> str:
    code = main(argv)
    cap = capsys.readouterr()
    assert code == 2, (code, cap.err)
    lines = [l for l in cap.err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    assert lines[0].startswith(f"oomsweep {argv[0]}: error: "), lines[0]
    return lines[0].split(": error: ", 1)[1]


def _sweep_text(**over: str) -> str:
    lines = {"name": "dup", "base": str(HANDA), "policies": "[upstream_4_19]", "replicates": "2", **over}
    return "".join(f"{k}: {v}\n" for k, v in lines.items())


def test_duplicate_top_level_key_is_refused_with_both_lines(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(_sweep_text() + "replicates: 3\n")  # PyYAML alone keeps the last one: 3
    msg = _one_error(["validate", str(path)], capsys)
    assert msg.startswith(str(path)) and "'replicates'" in msg
    assert "line 4" in msg and "line 5" in msg, msg
    assert _one_error(["run", str(path), "--serial", "--no-mlflow"], capsys) == msg
    assert not (tmp_path / "results").exists()


def test_duplicate_nested_and_flow_keys_are_refused(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(_sweep_text(grid="\n  victim.sched_at_handover: [idle]\n  victim.sched_at_handover: [unchanged]"))
    msg = _one_error(["validate", str(path)], capsys)
    assert "'victim.sched_at_handover'" in msg and "line 6" in msg and "line 7" in msg, msg

    path.write_text(_sweep_text(mlflow="{experiment: a, experiment: b}"))
    msg = _one_error(["validate", str(path)], capsys)
    assert "'experiment'" in msg and "twice on line 5" in msg and "columns" in msg, msg


def test_duplicate_key_in_the_base_scenario_file_is_refused(tmp_path, capsys):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(HANDA.read_text() + "horizon_s: 60\n")  # the file already sets horizon_s
    path = tmp_path / "s.yaml"
    path.write_text(_sweep_text(base=str(scenario)))
    msg = _one_error(["validate", str(path)], capsys)
    assert msg.startswith("base: ") and "'horizon_s'" in msg and str(scenario) in msg, msg


def test_yaml_merge_keys_may_still_be_overridden(tmp_path, capsys):
    path = tmp_path / "merge.yaml"
    path.write_text(_sweep_text(mlflow="{<<: {experiment: a, max_cell_runs: 10}, experiment: b}"))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [
    ("1e12", "got the string '1e12' (YAML reads 1e12 as text; write the integer 1000000000000)"),
    ("2.5", "got 2.5"),
    (".nan", "got nan"),
    ("1.0e+3", "got 1000.0"),
    ("[3]", "got [3]"),
])
def test_replicates_messages_say_what_was_given(value, expected, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(_sweep_text(replicates=value))
    msg = _one_error(["validate", str(path), "--yes"], capsys)
    assert msg == f"replicates: must be an integer >= 1 or {{adaptive: {{...}}}}, {expected}", msg
    assert "mapping" not in msg


@pytest.mark.parametrize("text", ["1e-3", "1.0e308", "1e12", "-2E5", ".5e1"])
def test_the_float_hint_is_a_spelling_yaml_reads_as_that_number(text, tmp_path, capsys):
    path = handa_sweep(tmp_path, grid={"reaper.busy_elsewhere_p": [text]})
    msg = _one_error(["validate", str(path)], capsys)
    hint = msg.split(": write ", 1)[1].rstrip(")")
    assert yaml.safe_load(f"x: {hint}")["x"] == float(text), msg  # the advice works


def test_empty_output_option_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = handa_sweep(tmp_path)
    for value in ("", "  "):
        msg = _one_error(["run", str(path), "--output", value, "--serial", "--no-mlflow"], capsys)
        assert msg.startswith("--output: "), msg
    assert not (tmp_path / "results").exists()  # the file's `output:` was not used instead


# ------------------------------------------------------------------ a lockup that cannot be seen


def test_horizon_not_beyond_lockup_after_is_refused_in_the_grid(tmp_path, capsys):
    """Handa's scenario at horizon_s 15 with lockup_after_s 20 used to report P(lockup) = 0."""
    path = handa_sweep(tmp_path, grid={"reaper.busy_elsewhere_p": [0.02], "horizon_s": [15, 120]})
    msg = _one_error(["validate", str(path)], capsys)
    assert msg.startswith("grid.horizon_s: cell (reaper.busy_elsewhere_p=0.02, horizon_s=15): "), msg
    assert "lockup_after_s (20 s)" in msg
    assert _one_error(["run", str(path), "--serial", "--no-mlflow"], capsys) == msg
    assert not (tmp_path / "results").exists()

    path = handa_sweep(tmp_path, grid={"lockup_after_s": [20, 120]})  # equal is refused too
    assert _one_error(["validate", str(path)], capsys).startswith("grid.lockup_after_s: cell (lockup_after_s=120)")


def test_horizon_not_beyond_lockup_after_is_refused_in_the_base(tmp_path, capsys):
    base = {**yaml.safe_load(HANDA.read_text()), "horizon_s": 15}
    path = handa_sweep(tmp_path, base=base)
    msg = _one_error(["validate", str(path)], capsys)
    assert msg.startswith("base.horizon_s: horizon_s (15 s) must be greater than lockup_after_s (20 s)"), msg


def test_a_horizon_beyond_lockup_after_is_accepted(tmp_path, capsys):
    path = handa_sweep(tmp_path, grid={"horizon_s": [21, 120]})
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err

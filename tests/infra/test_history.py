"""`oomsweep history`: per-execution lockup probability per policy, and the change test between runs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeps.analysis.history import build_history, format_history, register, run_history, two_proportion

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "k1, n1, k2, n2, low, high",
    [
        # Newcombe (1998) Stat Med 17:873, Table II, method 10 (p2 - p1 here: later minus earlier).
        (48, 80, 56, 70, 0.0524, 0.3339),
        (3, 10, 9, 10, 0.1705, 0.8090),
        (0, 29, 5, 56, -0.0381, 0.1926),
    ],
)
def test_difference_interval_matches_newcombe_method_10(k1, n1, k2, n2, low, high):
    r = two_proportion(k1, n1, k2, n2)
    assert r.diff == pytest.approx(k2 / n2 - k1 / n1)
    assert (round(r.low, 4), round(r.high, 4)) == (low, high)


def test_pooled_z_test():
    # 15/50 -> 30/50: pooled p 0.45, se sqrt(.45*.55*(2/50)) = 0.09950, z = 0.3 / 0.0995 = 3.015
    r = two_proportion(15, 50, 30, 50)
    assert r.z == pytest.approx(3.0151, abs=1e-4)
    assert r.p_value == pytest.approx(0.002569, abs=2e-6)
    assert two_proportion(30, 50, 15, 50).z == pytest.approx(-r.z)
    same = two_proportion(0, 40, 0, 40)  # no variation at all: nothing to test
    assert (same.z, same.p_value, same.diff) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        two_proportion(0, 0, 1, 2)


def _rows(execution: str, policy: str, k: int, n: int, errors: int = 0) -> list[dict]:
    rows = [dict(execution_id=execution, policy=policy, cell_id=f"c{i % 3}", lockup=i < k, status="ok") for i in range(n)]
    rows += [dict(execution_id=execution, policy=policy, cell_id="c0", lockup=False, status="error")] * errors
    return rows


def test_history_orders_executions_by_time_and_flags_only_significant_changes():
    # Stored out of order on purpose; provenance says e1 < e2 < e3.
    df = pd.DataFrame(
        _rows("e3", "upstream_4_19", 30, 100) + _rows("e1", "upstream_4_19", 5, 100, errors=2)
        + _rows("e2", "upstream_4_19", 6, 100) + _rows("e1", "timeout_backoff", 0, 100)
        + _rows("e3", "timeout_backoff", 1, 100)
    )
    meta = {
        "e1": {"started": "2026-11-24T01:30:00+00:00", "model_version": "0.1.0", "git_sha": "a" * 40},
        "e2": {"started": "2026-11-25T01:30:00+00:00", "model_version": "0.1.0", "git_sha": "b" * 40},
        "e3": {"started": "2026-11-26T01:30:00+00:00", "model_version": "0.2.0", "git_sha": "c" * 40},
    }
    h = build_history(df, meta, "nightly")
    assert [e.execution_id for e in h.executions] == ["e1", "e2", "e3"]
    up = [r for r in h.rows if r.policy == "upstream_4_19"]
    assert [(r.execution_id, r.prop.k, r.prop.n) for r in up] == [("e1", 5, 100), ("e2", 6, 100), ("e3", 30, 100)]
    assert up[0].errors == 2 and up[0].change is None
    assert not up[1].significant and up[1].change.p_value > 0.5
    assert up[2].significant and up[2].change.diff == pytest.approx(0.24) and up[2].change.p_value < 1e-4
    tb = [r for r in h.rows if r.policy == "timeout_backoff"]
    assert [r.execution_id for r in tb] == ["e1", "e3"]  # compared with the previous run of *this* policy
    assert not tb[1].significant
    assert [r.policy for r in h.changes] == ["upstream_4_19"] and h.tests == 3
    text = format_history(h)
    assert "CHANGED" in text and text.count("CHANGED") == 1
    assert "1 significant change " in text and "3 tests" in text
    assert "0.2.0" in text and "2026-11-26 01:30:00" in text
    # A stricter alpha removes the flag.
    assert not build_history(df, meta, "nightly", alpha=1e-6).changes


def _sweep_file(directory: Path, replicates: int) -> Path:
    text = (ROOT / "tests" / "infra" / "data" / "tiny.yaml").read_text()
    text = text.replace("base: ../../../configs/", f"base: {ROOT}/configs/").replace("replicates: 4", f"replicates: {replicates}")
    path = directory / f"tiny-{replicates}.yaml"
    path.write_text(text)
    return path


def test_history_of_real_executions(tmp_path, capsys):
    """Two real runs of one sweep into one dataset (the second adds replicates): two executions."""
    out = tmp_path / "results"
    for reps in (3, 6):
        subprocess.run([sys.executable, "-m", "sweeps", "run", str(_sweep_file(tmp_path, reps)), "--serial",
                        "--no-mlflow", "--output", str(out)], check=True, capture_output=True, timeout=300)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert run_history(parser.parse_args(["history", str(out), "--sweep", "infra-tiny"])) == 0
    text = capsys.readouterr().out
    assert "sweep infra-tiny: 2 executions" in text
    table = [ln for ln in text.splitlines() if ln.startswith(("upstream_4_19 ", "timeout_backoff "))]
    assert len(table) == 4  # 2 policies x 2 executions
    assert all(" 6 " in ln for ln in table)  # 2 cells x 3 new replicates per execution and policy
    # Bad input is a usage error naming the closest sweep.
    with pytest.raises(ValueError, match="did you mean 'infra-tiny'"):
        run_history(parser.parse_args(["history", str(out), "--sweep", "infra-tinny"]))
    # Through the CLI (`oomsweep history`), as a nightly alert would call it.
    p = subprocess.run([sys.executable, "-m", "sweeps", "history", str(out), "--fail-on-change"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 1) and "2 executions" in p.stdout
    assert (p.returncode == 1) == ("CHANGED" in p.stdout)
    bad = subprocess.run([sys.executable, "-m", "sweeps", "history", str(out), "--sweep", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no sweep 'nope'" in bad.stderr and "Traceback" not in bad.stderr

"""Hung model run: a row whose simulation outlives --row-timeout is stored as status=timeout.

The injected row is real: a scenario (see conftest.ENDLESS_SCENARIO) with a horizon of 10^6 s, which
the model would simulate for hours.  Nothing in oommodel is patched.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from sweeps.errors import RowFailed
from sweeps.run.row_task import RowSimulator
from sweeps.execution.batching import SerialExecutor, execute_batch
from sweeps.run.runner import RunOptions, run_sweep
from sweeps.storage.schema import STATUS_OK, STATUS_TIMEOUT

from rel_helpers import ENDLESS_SCENARIO, assert_exactly_once, read_keys_everywhere, write_yaml

pytestmark = pytest.mark.timeout(240)

HUGE_HORIZON = 1_000_000.0


def _sweep(tmp_path, name="hung"):
    return write_yaml(
        tmp_path / f"{name}.yaml",
        {
            "name": name,
            "base": ENDLESS_SCENARIO,
            "grid": {"horizon_s": [0.2, HUGE_HORIZON]},
            "policies": ["upstream_4_19"],
            "replicates": 2,
            "seed": 3,
            "output": str(tmp_path / "results"),
        },
    )


def _check_dataset(tmp_path, name="hung"):
    import pandas as pd

    df = pd.read_parquet(tmp_path / "results" / f"sweep={name}")
    df["policy"] = df["policy"].astype(str)
    assert_exactly_once(df, 4)
    hung = df[df["horizon_s"] == HUGE_HORIZON]
    fine = df[df["horizon_s"] == 0.2]
    assert set(hung["status"]) == {STATUS_TIMEOUT}
    assert set(fine["status"]) == {STATUS_OK}
    # never confused with a simulated lockup: no outcome at all, not lockup=False or True
    assert hung["lockup"].isna().all() and hung["max_stall_s"].isna().all() and hung["sim_events"].isna().all()
    assert fine["lockup"].notna().all()
    for _, row in hung.iterrows():
        assert f"cell {row['cell_id']}" in row["error"] and f"seed {row['seed']}" in row["error"]
        assert "wall-clock budget of 3 s" in row["error"]
        assert 2.9 <= row["wall_s"] < 60  # cut at the budget, not after the simulated hours
    return df


def test_execute_batch_cuts_an_endless_row_and_runs_the_next(tmp_path):
    from sweeps.run.row_task import RowTask

    def task(h, rep):
        sc = {**ENDLESS_SCENARIO, "horizon_s": h}
        return RowTask("c" + str(h), 0, "upstream_4_19", "upstream_4_19", (), rep, 7, sc)

    sim = RowSimulator()
    t0 = time.monotonic()
    out = execute_batch(sim, [task(HUGE_HORIZON, 0), task(0.2, 1)], False, "local", 2.0)
    assert time.monotonic() - t0 < 60
    assert [r["status"] for r in out] == [STATUS_TIMEOUT, STATUS_OK]
    assert "seed 7" in out[0]["error"] and "lockup" not in out[0]
    # no alarm left armed: a later slow-ish row without a budget is not interrupted
    assert execute_batch(sim, [task(0.2, 2)], False, "local", None)[0]["status"] == STATUS_OK
    with pytest.raises(RowFailed, match="wall-clock budget"):
        execute_batch(sim, [task(HUGE_HORIZON, 3)], True, "local", 0.3)


def test_watchdog_budget_off_the_main_thread():
    """Where SIGALRM cannot be used (a thread), the watchdog interrupts the row instead."""
    import threading

    from sweeps.run.row_task import RowTask

    sc = {**ENDLESS_SCENARIO, "horizon_s": HUGE_HORIZON}
    rows = [RowTask("c", 0, "upstream_4_19", "upstream_4_19", (), 0, 7, sc)]
    box = {}
    th = threading.Thread(target=lambda: box.update(r=execute_batch(RowSimulator(), rows, False, "t", 0.5)))
    th.start()
    th.join(60)
    assert not th.is_alive()
    assert box["r"][0]["status"] == STATUS_TIMEOUT


def test_serial_sweep_records_timeout_rows(tmp_path, capsys):
    from sweeps.cli import main

    path = _sweep(tmp_path)
    assert main(["run", str(path), "--serial", "--no-mlflow", "--row-timeout", "-1"]) == 2
    assert main(["run", str(path), "--serial", "--no-mlflow", "--row-timeout", "3"]) == 1  # documented: status != ok
    err = capsys.readouterr().err
    assert "2 rows have status != ok (2 timeout" in err and "Traceback" not in err
    _check_dataset(tmp_path)
    # a rerun does not retry them (they are stored; rerunning would time out again)
    res2 = run_sweep(path, RunOptions(executor="serial", no_mlflow=True, row_timeout=3.0))
    assert res2.rows_run == 0


@pytest.mark.slow
def test_ray_sweep_records_timeout_rows(tmp_path, ray_session, capsys):
    path = _sweep(tmp_path)
    res = run_sweep(path, RunOptions(no_mlflow=True, row_timeout=3.0, workers=2))
    assert res.exit_code == 1 and res.rows_timeout == 2
    df = _check_dataset(tmp_path)
    assert (df["node_id"] != "local").all()  # really ran on Ray workers
    err = capsys.readouterr().err
    assert "2 timeout" in err and "not lockups" in err
    read_keys_everywhere(tmp_path / "results", "hung")

"""One real boot: SCHED_NORMAL children, no pinning -> every child killed, no lockup, rows beside the model's.

Needs infra/qemu/ci-setup.sh (qemu, static busybox, the cached Debian 6.1 kernel). Skipped without
it unless OOMSWEEP_REQUIRE_QEMU=1 (CI sets it after running ci-setup.sh). About 15 s under TCG.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from sweeps.calibrate import qemu
from sweeps.errors import QemuError
from sweeps.storage import dataset as storage
from sweeps.cli.calibrate import register, run

SCENARIO = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "calibrate-normal-children.yaml"


def _harness_missing() -> str:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed"
    try:
        qemu.find_kernel()
    except QemuError as exc:
        return str(exc)
    return ""


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="oomsweep")
    register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


@pytest.mark.qemu
@pytest.mark.timeout(240)
def test_normal_children_boot(tmp_path):
    missing = _harness_missing()
    if missing:
        if os.environ.get("OOMSWEEP_REQUIRE_QEMU") == "1":
            pytest.fail(f"OOMSWEEP_REQUIRE_QEMU=1 but {missing}")
        pytest.skip(missing)
    out, err = io.StringIO(), io.StringIO()
    args = _parse(["calibrate", str(SCENARIO), "--runs", "1", "--seeds", "3", "--output", str(tmp_path / "ds"),
                   "--no-mlflow", "--boot-timeout", "150"])
    code = run(args, stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert "boot 1/1 [" in err.getvalue()
    assert re.search(r"host share (0\.\d\d|1\.\d\d)", err.getvalue())  # QEMU's CPU time was measured

    df = storage.read_sweep(tmp_path / "ds", "calibrate-normal-children")
    kernel = df[df["source"] == "kernel"]
    model = df[df["source"] == "model"]
    assert len(kernel) == 1 and len(model) == 3
    row = kernel.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["policy"] == "kernel" and row["accelerator"] in ("kvm", "tcg")
    assert row["kernel_release"].startswith("6.1.0-")
    assert row["kills"] == 4  # every child touches more than memory.max alone
    assert not row["lockup"] and row["max_stall_s"] < 5.0
    assert row["oom_skip_by"] == "exit" and row["victims_pending_at_end"] == 0
    assert row["first_kill_s"] > 0 and row["memory_freed_mb"] > 0
    # the exit waits are derived for kernel rows (no extra boot: preempt=full is checked without QEMU in
    # test_command.py; a 2-vCPU preempt=full boot costs ~22 s under TCG)
    assert 0 <= row["exits_pending_max"] <= row["kills"] and 0.0 <= row["exit_delay_max_s"] < 5.0
    assert set(model["policy"]) == {"upstream_6_1"} and set(model["accelerator"]) == {""}
    assert (model["kills"] == 4).all() and not model["lockup"].any()
    assert set(df["cell_id"]) == {row["cell_id"]}  # the same scenario on both sides
    table = out.getvalue()
    assert "kernel" in table and "upstream_6_1" in table and "P(lockup)" in table
    assert list((tmp_path / "ds" / "calibrate-logs" / "calibrate-normal-children").glob("*.log"))

"""`oomsweep calibrate --kernel NAME`: the choice of a built kernel and its policy, refused before any boot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
HANDA = ROOT / "configs" / "scenarios" / "handa-2018-11-14.yaml"




@pytest.fixture
def built(tmp_path, monkeypatch):
    """A fake manifest of 5.10-oomsweep (no image: these tests never boot)."""
    monkeypatch.setenv("OOMSWEEP_KERNELS_CACHE", str(tmp_path / "kc"))
    d = tmp_path / "kc" / "5.10-oomsweep"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({
        "name": "5.10-oomsweep", "image": str(d / "bzImage"), "kernel_release": "5.10.223-oomsweep-test",
        "hz": 1000, "preempt": "full", "policies": ["upstream_5_10", "upstream_4_19", "handoff_rfc_v2"],
        "instruments": ["sched_at_handover", "handed_over_printk"], "patch_hash": "p", "build_hash": "b"}))
    return tmp_path


def test_a_policy_the_kernel_lacks_is_refused_before_booting(built, oomsweep_cli):
    code, _, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", "--policy", "handoff_oom_lock",
                         "--match-kernel", "--runs", "1", "--seeds", "0", "--output", str(built / "ds"),
                         "--no-mlflow"])
    assert code == 2 and "no policy 'handoff_oom_lock'" in err, err
    assert not (built / "ds").exists()


def test_the_hack_is_no_longer_refused_on_a_kernel_that_has_it(built, oomsweep_cli):
    # --runs 0: translation and refusals only; the model runs the same (hz/softirq/preempt-matched) scenario
    code, out, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", "--policy", "handoff_rfc_v2",
                           "--match-kernel", "--runs", "0", "--seeds", "1", "--output", str(built / "ds"),
                           "--no-mlflow"])
    assert code == 0, err
    assert "--match-kernel: machine.softirq: 'inline' -> 'ksoftirqd_defer'" in err
    assert "kernel 5.10.223-oomsweep-test" in err


def test_the_stock_kernel_still_refuses_the_hack(built, oomsweep_cli):
    code, _, err = oomsweep_cli(["calibrate", str(HANDA), "--runs", "0", "--seeds", "0", "--match-kernel",
                         "--output", str(built / "ds"), "--no-mlflow"])
    assert code == 2 and "victim.sched_at_handover" in err


def test_kernel_policy_needs_a_built_kernel(built, oomsweep_cli):
    code, _, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel-policy", "handoff_rfc_v2", "--runs", "0",
                         "--seeds", "0", "--output", str(built / "ds"), "--no-mlflow"])
    assert code == 2 and "need a kernel built by infra/kernels/build.sh" in err


def test_an_unbuilt_kernel_names_the_build_command(tmp_path, monkeypatch, oomsweep_cli):
    monkeypatch.setenv("OOMSWEEP_KERNELS_CACHE", str(tmp_path / "empty"))
    code, _, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", "--policy", "handoff_rfc_v2",
                         "--runs", "1", "--seeds", "0", "--output", str(tmp_path / "ds"), "--no-mlflow"])
    assert code == 2 and "not built: run infra/kernels/build.sh 5.10-oomsweep" in err

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
    # Issue 14's own command, without --match-kernel: Handa's file already says what his 4.20 (and 5.10)
    # did with softirqs, HZ and preemption, so nothing is refused and nothing needs matching.
    # --runs 0: translation and refusals only.
    code, out, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", "--policy", "handoff_rfc_v2",
                           "--runs", "0", "--seeds", "1", "--output", str(built / "ds"), "--no-mlflow"])
    assert code == 0, err
    assert "--match-kernel" not in err
    assert "kernel 5.10.223-oomsweep-test" in err


def test_skip_after_close_reaches_the_model_side_and_labels_its_rows(built, oomsweep_cli):
    from sweeps.storage import dataset

    code, out, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", "--policy", "handoff_rfc_v2",
                                   "--skip-after", "close", "--runs", "0", "--seeds", "1",
                                   "--output", str(built / "ds"), "--no-mlflow"])
    assert code == 0, err
    df = dataset.read_sweep(built / "ds", "calibrate-handa-2018-11-14")
    assert list(df["policy"]) == ["handoff_rfc_v2[skip_after=close]"]
    assert json.loads(df["policy_options"].iloc[0])["skip_after"] == "close"
    assert "handoff_rfc_v2[skip_after=close]" in out


def test_built_kernel_boots_are_labelled_by_kernel_and_policy():
    from sweeps.calibrate.command import kernel_label

    assert kernel_label("5.10-oomsweep", "handoff_rfc_v2") == "5.10-oomsweep:handoff_rfc_v2"
    assert kernel_label("5.10-oomsweep", "handoff_rfc_v2", "close") == "5.10-oomsweep:handoff_rfc_v2[skip_after=close]"


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


@pytest.mark.parametrize("flags", [["--kernel-policy", "upstream_5_10"], []])
def test_the_kernels_stock_policy_is_compared_with_the_models_upstream_5_10(built, flags, oomsweep_cli):
    code, _, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", *flags, "--match-kernel",
                         "--runs", "0", "--seeds", "1", "--output", str(built / "ds"), "--no-mlflow"])
    assert code == 0, err
    assert "1 model replicate(s) of upstream_5_10" in err


def test_the_model_policy_follows_the_kernel_unless_given(built):
    from sweeps.calibrate.command import resolve_model_policy

    assert resolve_model_policy(None, None, None) == "upstream_6_1"            # the stock 6.1 image
    assert resolve_model_policy(None, None, "5.10-oomsweep") == "upstream_5_10"  # the build's default
    assert resolve_model_policy(None, "direct_reap", "5.10-oomsweep") == "direct_reap"
    assert resolve_model_policy("upstream_4_19", "upstream_5_10", "5.10-oomsweep") == "upstream_4_19"


def test_a_new_policy_on_an_old_build_is_refused_with_the_rebuild_command(built, oomsweep_cli):
    code, _, err = oomsweep_cli(["calibrate", str(HANDA), "--kernel", "5.10-oomsweep", "--kernel-policy", "stall_backoff",
                         "--match-kernel", "--runs", "1", "--seeds", "0", "--output", str(built / "ds"),
                         "--no-mlflow"])
    assert code == 2 and "no policy 'stall_backoff'" in err and "run infra/kernels/build.sh 5.10-oomsweep" in err
    assert not (built / "ds").exists()


def test_kernels_list_shows_the_stock_images_beside_the_built_ones(built, tmp_path, monkeypatch, oomsweep_cli):
    monkeypatch.setenv("OOMSWEEP_KERNEL_CACHE", str(tmp_path / "nothing-fetched"))
    code, out, _ = oomsweep_cli(["kernels", "list"])
    assert code == 0
    assert "5.10-oomsweep: " in out
    assert "6.1 (stock): not fetched (fetch-kernel.sh 6.1)" in out
    assert "6.12 (stock): not fetched (fetch-kernel.sh 6.12)" in out

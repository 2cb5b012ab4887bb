"""`oomsweep kernels build|list`: where each image is, and what a build older than its definition lacks."""

from __future__ import annotations

import json

import pytest

from sweeps.cli.commands import main


def _manifest(cache, policies):
    d = cache / "5.10-oomsweep"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({
        "name": "5.10-oomsweep", "image": str(d / "bzImage"), "kernel_release": "5.10.223-oomsweep-t", "hz": 1000,
        "preempt": "full", "policies": policies, "patch_hash": "abc"}))
    return d


def test_list_names_an_unbuilt_kernel_and_how_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OOMSWEEP_KERNELS_CACHE", str(tmp_path))
    assert main(["kernels", "list"]) == 0
    out = capsys.readouterr().out
    assert "5.10-oomsweep: not built (oomsweep kernels build 5.10-oomsweep)" in out
    assert "stall_backoff direct_reap" in out


def test_list_prints_the_image_and_what_an_old_build_lacks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OOMSWEEP_KERNELS_CACHE", str(tmp_path))
    d = _manifest(tmp_path, ["upstream_5_10", "upstream_4_19"])
    assert main(["kernels", "list"]) == 0
    out = capsys.readouterr().out
    assert f"5.10-oomsweep: {d / 'bzImage'}\n" in out and "patch set abc" in out
    assert "lacks handoff_rfc_v2 handoff_oom_lock timeout_backoff stall_backoff direct_reap" in out


@pytest.mark.slow
def test_build_passes_on_build_sh_refusing_an_unknown_kernel(capsys):
    assert main(["kernels", "build", "no-such-kernel"]) == 2

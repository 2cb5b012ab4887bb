"""Profile values measured straight from kernel console logs (sweeps/calibrate/measured.py):
the oom_reaper's wake-up delay read from the patched 5.10 kernel's printks, its summary, the
reference manifest's `measure:` entries, and the value's way into a scenario through `machine.profile`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from oommodel import Scenario
from oommodel.distributions import LogNormal
from oommodel.profiles import check_profile, load_profile, profile_values
from sweeps.calibrate import measured as M
from sweeps.calibrate.reference import ReferenceError, load_reference

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "calibration" / "reference"
HANDA = ROOT / "configs" / "scenarios" / "handa-2018-11-14.yaml"


def _kill(t: float, pid: int, anon_kb: int) -> str:
    return (f"[{t:12.6f}] Memory cgroup out of memory: Killed process {pid} (oomrepro) total-vm:206464kB, "
            f"anon-rss:{anon_kb}kB, file-rss:0kB, shmem-rss:8kB, UID:0 pgtables:40kB oom_score_adj:1000")


# A console excerpt in the patched 5.10 kernel's words: four small victims, one large one.
CONSOLE = "\n".join([
    "[    0.951408] oomsweep: policy=handoff_oom_lock skip_after=pgtables sched_at_handover=idle",
    "[   13.439381] oomsweep: start run=0 children=64 horizon_s=120.000 lockup_after_s=20.000",
    _kill(18.000000, 101, 856),
    "[   18.007300] oomsweep: MMF_OOM_SKIP pid=101 by=reaper",      # 7.3 ms: counted
    _kill(18.100000, 102, 102696),
    "[   18.600000] oomsweep: MMF_OOM_SKIP pid=102 by=reaper",      # a 100 MB reap: too large
    _kill(18.700000, 103, 856),
    "[   18.700000] oomsweep: MMF_OOM_SKIP pid=103 by=reaper",      # same microsecond: a 0 delay, counted
    _kill(18.800000, 104, 856),
    "[   18.801000] oomsweep: MMF_OOM_SKIP pid=104 by=exit",        # its own exit_mmap(): not the reaper
    _kill(19.000000, 105, 856),
    "[   40.000000] oomsweep: stall t=26.5 since=5.6",
    "[   40.050000] oomsweep: MMF_OOM_SKIP pid=105 by=reaper",      # after the stall declaration
    _kill(41.000000, 106, 856),
    "[   41.002000] oomsweep: MMF_OOM_SKIP pid=106 by=reaper",      # killed after it
])


def test_the_reaper_wake_delay_counts_small_victims_flagged_by_the_reaper_before_the_stall():
    got = M.reaper_wake_delays(CONSOLE, anon_rss_max_kb=2048)
    assert got == pytest.approx((0.0073, 0.0))
    assert len(M.reaper_wake_delays(CONSOLE, anon_rss_max_kb=200_000)) == 3  # the 100 MB reap joins


def test_the_lognormal_matches_the_median_and_p90_and_the_mle_is_a_cross_check():
    rng = np.random.default_rng(7)
    xs = rng.lognormal(8.9, 1.37, 20_000)
    mu, sigma = M.lognormal_from_quantiles(xs)
    assert mu == pytest.approx(8.9, abs=0.03) and sigma == pytest.approx(1.37, abs=0.03)
    mle_mu, mle_sigma = M.lognormal_mle(np.concatenate([xs, np.zeros(50)]))  # zeros are dropped
    assert mle_mu == pytest.approx(8.9, abs=0.03) and mle_sigma == pytest.approx(1.37, abs=0.03)
    with pytest.raises(ValueError):
        M.lognormal_from_quantiles([0.0] * 10)  # no lognormal has a median of 0


def test_estimate_needs_enough_samples_and_says_where_from():
    from sweeps.errors import InputError

    t = M.MeasuredTarget("machine.idle_exit_us", "reaper_wake_delay", "x/runs.csv", {}, 2048)
    run = M.MeasuredRun("logs/a.log", "handa-2018-11-14.yaml", "handoff_oom_lock", "5.10.223-oomsweep-975cac13",
                        "5afb5b7a6b5e", "shared_llc", (0.0073, 0.0))
    with pytest.raises(InputError, match=r"machine\.idle_exit_us: 2 samples in 1 runs of x/runs\.csv"):
        M.estimate(t, [run])
    many = M.MeasuredRun(**{**run.__dict__, "samples_s": (0.0073, 0.0, 0.012, 0.002, 0.04)})
    r = M.estimate(t, [many] * 4)
    assert r.n == 20 and r.zeros == 4 and set(r.value) == {"lognormal"} and len(r.runs) == 4
    assert r.value["lognormal"][0] == pytest.approx(math.log(7300), abs=1e-3)


# ------------------------------------------------------------------------------------------ the reference


def test_the_reference_measures_idle_exit_us_from_the_5_10_hack_boots_on_a_shared_llc():
    ref = load_reference(REFERENCE)
    (target, runs), = [(t, rs) for t, rs in ref.measured if t.key == "machine.idle_exit_us"]
    assert {r.topology for r in runs} == {"shared_llc"}
    assert {r.policy for r in runs} == {"handoff_rfc_v2", "handoff_oom_lock"}
    assert all(r.kernel_release.startswith("5.10.223-oomsweep") and r.patch_hash for r in runs)
    assert all(f.startswith("kernel-5.10/") for f in ref.files if "5.10" in f)
    r = M.estimate(target, runs)
    assert r.n >= 300
    assert 0.001 < r.median_s < 0.05 and r.p10_s < r.median_s < r.p90_s
    mu, sigma = r.value["lognormal"]
    assert math.exp(mu) == pytest.approx(r.median_s * 1e6, rel=0.01)
    assert r.interval["mu"][0] <= mu <= r.interval["mu"][1]


def test_the_shipped_profile_holds_what_the_estimator_computes():
    # refit (`oomsweep calibrate fit`) rather than edit: the committed value is the code's
    ref = load_reference(REFERENCE)
    (target, runs), = ref.measured
    r = M.estimate(target, runs)
    assert profile_values("qemu_tcg")["machine.idle_exit_us"] == r.value
    src = load_profile("qemu_tcg")["sources"]["machine.idle_exit_us"]
    assert src["n"] == r.n and src["boot_topology"] == ["shared_llc"]
    assert "5.10.223-oomsweep" in src["kernel"] and "patch hash" in src["kernel"]
    assert len(src["runs"]) == len(runs) and src["method"] and src["note"]


def _reference_with(tmp_path: Path, measure: list) -> Path:
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({"measure": measure, "scenarios": {}}))
    (tmp_path / "kernel-5.10").symlink_to(REFERENCE / "kernel-5.10")
    return tmp_path


def test_a_bad_measure_entry_is_refused_naming_its_key(tmp_path):
    good = {"key": "machine.idle_exit_us", "estimator": "reaper_wake_delay", "dataset": "kernel-5.10/runs.csv",
            "anon_rss_max_kb": 2048, "where": {"kernel_policy": "handoff_oom_lock"}}
    root = _reference_with(tmp_path, [{**good, "estimator": "reaper_wake"}])
    with pytest.raises(ReferenceError, match=r"measure\[0\]\.estimator: unknown 'reaper_wake'"):
        load_reference(root)
    (root / "manifest.yaml").write_text(yaml.safe_dump({"measure": [{**good, "where": {"polcy": "x"}}], "scenarios": {}}))
    with pytest.raises(ReferenceError, match=r"measure\[0\]\.where\.polcy: not a column"):
        load_reference(root)
    (root / "manifest.yaml").write_text(yaml.safe_dump({"measure": [{**good, "where": {"kernel_policy": "none"}}],
                                                       "scenarios": {}}))
    with pytest.raises(ReferenceError, match=r"measure\[0\]\.where: no row"):
        load_reference(root)
    (root / "manifest.yaml").write_text(yaml.safe_dump({"measure": [good], "scenarios": {}}))
    (target, runs), = load_reference(root).measured
    assert {r.policy for r in runs} == {"handoff_oom_lock"}


# ------------------------------------------------------------------------------------------ the profile


def test_a_qemu_tcg_scenario_gets_the_measured_idle_exit_and_an_explicit_zero_wins():
    raw = yaml.safe_load(HANDA.read_text())
    raw["machine"]["profile"] = "qemu_tcg"
    sc = Scenario.from_dict(raw)
    want = profile_values("qemu_tcg")["machine.idle_exit_us"]
    assert isinstance(sc.machine.idle_exit_us, LogNormal)
    assert sc.machine.idle_exit_us.to_dict() == want
    d = sc.to_dict()
    assert d["machine"]["idle_exit_us"] == want
    assert Scenario.from_dict(d) == sc and Scenario.from_dict(d).to_json() == sc.to_json()  # same cell id

    raw["machine"]["idle_exit_us"] = 0
    zero = Scenario.from_dict(raw)
    assert zero.machine.idle_exit_us == 0.0
    # the explicit 0 stays in the canonical dict (omitted, the profile would fill it on the way back)
    assert zero.to_dict()["machine"]["idle_exit_us"] == 0.0
    assert Scenario.from_dict(zero.to_dict()) == zero and zero != sc
    # the default profile sets nothing: old canonical dicts (and cell ids) stand
    assert "idle_exit_us" not in Scenario.from_yaml(HANDA).to_dict()["machine"]


def test_a_profile_value_must_be_a_number_or_a_distribution():
    check_profile({"values": {"machine.idle_exit_us": {"lognormal": [8.9, 1.4]}}})
    with pytest.raises(ValueError, match=r"values\.machine\.idle_exit_us: unknown distribution 'lognrml'"):
        check_profile({"values": {"machine.idle_exit_us": {"lognrml": [8.9, 1.4]}}})
    with pytest.raises(ValueError, match=r"values\.costs\.touch_ms_per_mb: must be a number or a distribution"):
        check_profile({"values": {"costs.touch_ms_per_mb": "fast"}})

"""`oomsweep calibrate fit`: the fit recovers known values from rows the model made, the agreement
rule judges hand-made rows as stated, the reference dataset loads, and the command runs end to end."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oommodel import simulate
from sweeps.calibrate import fit as F
from sweeps.calibrate.reference import ReferenceError, load_reference

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "calibration" / "reference"
SCEN = REFERENCE / "scenarios"


def raw(name: str) -> dict:
    return yaml.safe_load((SCEN / f"{name}.yaml").read_text())


def synthetic(scenario: dict, params: dict, seeds: range, policy: str = "upstream_6_1") -> list[tuple[str, dict]]:
    """"Kernel" rows made by the model itself at known parameter values (seeds the fit never uses)."""
    sc = F.with_values(scenario, params)
    return [(f"synthetic-{s}", dataclasses.asdict(simulate(sc, policy, seed=s))) for s in seeds]


# ------------------------------------------------------------------------------------------ the fit


def test_fit_recovers_the_fault_cost_of_fresh_memory():
    sc = raw("normal-children")  # four SCHED_NORMAL children with random start offsets
    truth = 3.0
    kernel = {"nc": synthetic(sc, {"costs.first_touch_ms_per_mb": truth}, range(1000, 1005))}
    t = F.Target("costs.first_touch_ms_per_mb", "first_kill_s", ("nc",), (0.05, 14.0))
    r = F.fit_target(t, kernel, {"nc": sc}, {}, "upstream_6_1")
    assert r.value == pytest.approx(truth, rel=0.05)
    assert r.interval[0] <= truth <= r.interval[1] * 1.05
    assert not r.at_bound


def test_fit_recovers_two_costs_together():
    # first_touch sets the first kill, unmap_ms_per_gb the reap after the reaper's 2 s timer; each
    # target is fitted with the other set (two passes), from rows the model made at (5.0, 80.0).
    sc = F.set_key(raw("idle-victim-no-throttling"), "machine.ksoftirqd_awake_p", 0.0)  # always reaped
    truth = {"costs.first_touch_ms_per_mb": 5.0, "costs.unmap_ms_per_gb": 80.0}
    kernel = {"iv": synthetic(sc, truth, range(2000, 2003))}
    plan = [F.Target("costs.first_touch_ms_per_mb", "first_kill_s", ("iv",), (0.05, 14.0)),
            F.Target("costs.unmap_ms_per_gb", "kill_to_skip_s", ("iv",), (1.0, 5000.0),
                     where={"oom_skip_by": "reaper"})]
    values, results = F.fit_plan(plan, kernel, {"iv": sc}, "upstream_6_1")
    assert values["costs.first_touch_ms_per_mb"] == pytest.approx(5.0, rel=0.02)
    assert values["costs.unmap_ms_per_gb"] == pytest.approx(80.0, rel=0.05)
    assert [r.key for r in results] == [t.key for t in plan]


def test_fit_recovers_the_ksoftirqd_wake_rate_inside_its_interval():
    # ksoftirqd/0 is woken at this rate while the FIFO allocator holds CPU 0; awake at the reaper
    # timer's expiry, it keeps the timer from firing: lockup.
    sc = raw("idle-victim-no-throttling")
    truth = 0.3
    kernel = {"iv": synthetic(sc, {"machine.ksoftirqd_wake_hz": truth}, range(3000, 3100))}
    k = sum(o["lockup"] for _, o in kernel["iv"])
    assert 10 < k < 90
    t = F.Target("machine.ksoftirqd_wake_hz", "lockup", ("iv",), (0.01, 50.0), seeds=100)
    r = F.fit_target(t, kernel, {"iv": sc}, {}, "upstream_6_1")
    assert r.interval[0] <= truth <= r.interval[1]
    assert r.value == pytest.approx(truth, rel=0.35)
    model_k = int(r.model_at_fit.split("/")[0])
    assert abs(model_k - k) <= 3  # binomial ML: the model's rate meets k/n
    assert "k/n" in r.method


def test_a_statistic_no_kernel_run_carries_is_an_error():
    sc = raw("idle-victim-no-throttling")
    t = F.Target("costs.unmap_ms_per_gb", "kill_to_skip_s", ("iv",), (1.0, 500.0), where={"oom_skip_by": "reaper"})
    locked = [("r0", {"lockup": True, "first_kill_s": 4.0, "first_skip_s": None, "oom_skip_by": "none"})]
    with pytest.raises(F.FitError, match="no kernel run"):
        F.fit_target(t, {"iv": locked}, {"iv": sc}, {}, "upstream_6_1")


def test_an_unreachable_value_is_flagged_at_bound():
    sc = raw("normal-children")
    kernel = {"nc": [("slow", {"first_kill_s": 50.0})]}  # later than any value inside the bounds can make it
    t = F.Target("costs.first_touch_ms_per_mb", "first_kill_s", ("nc",), (0.05, 2.0))
    r = F.fit_target(t, kernel, {"nc": sc}, {}, "upstream_6_1")
    assert r.at_bound and r.value == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ agreement


def rows(**cols):
    n = max(len(v) for v in cols.values())
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def test_lockup_rates_are_compared_by_fishers_exact_test():
    same = F.compare("s", "check", "lockup", rows(lockup=[True] + [False] * 3), rows(lockup=[True] * 10 + [False] * 30))
    assert same.agree is True and "Fisher p=1.000" in same.rule
    differ = F.compare("s", "check", "lockup", rows(lockup=[False] * 10), rows(lockup=[True] * 9 + [False]))
    assert differ.agree is False
    from scipy.stats import fisher_exact

    assert float(differ.rule.split("=")[1]) == pytest.approx(fisher_exact([[0, 10], [9, 1]])[1], abs=5e-4)
    assert "0/10 = 0.00 [0.00, 0.28]" == differ.kernel  # Wilson 95 %


def test_small_samples_agree_unless_the_test_rejects():
    # 10/11 on the kernel against 18/20 in the model: no evidence of a difference
    c = F.compare("s", "fit", "lockup", rows(lockup=[True] * 10 + [False]), rows(lockup=[True] * 18 + [False] * 2))
    assert c.agree is True


def test_times_agree_inside_the_widened_kernel_range():
    kernel = rows(first_kill_s=[1.0, 1.2])
    assert F.compare("s", "check", "first_kill_s", kernel, rows(first_kill_s=[1.3] * 5)).agree is True   # <= 1.32
    assert F.compare("s", "check", "first_kill_s", kernel, rows(first_kill_s=[1.4] * 5)).agree is False
    assert F.compare("s", "check", "first_kill_s", kernel, rows(first_kill_s=[0.85] * 5)).agree is False  # < 0.9
    one = rows(first_kill_s=[0.010])  # one run: the 5 ms polling floor
    assert F.compare("s", "check", "first_kill_s", one, rows(first_kill_s=[0.014])).agree is True
    assert F.compare("s", "check", "first_kill_s", one, rows(first_kill_s=[0.016])).agree is False


def test_kill_to_skip_is_derived_and_filtered():
    kernel = [{"first_kill_s": 4.0, "first_skip_s": 6.03, "oom_skip_by": "reaper"},
              {"first_kill_s": 4.0, "first_skip_s": None, "oom_skip_by": "none"}]
    model = [{"first_kill_s": 3.0, "first_skip_s": 5.02, "oom_skip_by": "reaper"}] * 3
    c = F.compare("s", "fit", "kill_to_skip_s", kernel, model, {"oom_skip_by": "reaper"})
    assert c.agree is True and c.kernel == "n=1: 2.030 s"


def test_counts_agree_within_one():
    kernel = rows(exits_pending_max=[1, 1])
    assert F.compare("s", "check", "exits_pending_max", kernel, rows(exits_pending_max=[0] * 4)).agree is True
    assert F.compare("s", "check", "exits_pending_max", kernel, rows(exits_pending_max=[3] * 4)).agree is False


def test_structural_fields_compare_the_most_frequent_value():
    k = rows(oom_skip_by=["reaper", "none", "none"])
    assert F.compare("s", "check", "oom_skip_by", k, rows(oom_skip_by=["none"] * 9 + ["reaper"])).agree is True
    assert F.compare("s", "check", "oom_skip_by", k, rows(oom_skip_by=["exit"] * 10)).agree is False
    assert F.compare("s", "check", "kills", rows(kills=[64, 64]), rows(kills=[61, 64, 61])).agree is False


def test_a_statistic_the_kernel_did_not_record_is_not_judged():
    c = F.compare("s", "check", "exit_delay_max_s", rows(lockup=[False]), rows(exit_delay_max_s=[1.0]))
    assert c.agree is None and c.rule == "not comparable"


def test_the_table_is_plain_text():
    table = F.format_comparisons([
        F.compare("a", "fit", "lockup", rows(lockup=[True, False]), rows(lockup=[True, True])),
        F.compare("b", "check", "first_kill_s", rows(first_kill_s=[1.0]), rows(first_kill_s=[3.0])),
    ])
    lines = table.splitlines()
    assert len(lines) == 3 and lines[0].split()[:4] == ["set", "scenario", "statistic", "fitted"]
    assert "\x1b" not in table and lines[2].rstrip().endswith("NO")
    assert lines[1].split()[3] == "yes" and lines[2].split()[3] == "-"


def test_the_check_tells_fitted_rows_fit_set_rows_and_held_out_rows_apart():
    from sweeps.calibrate.fit_command import agreement_counts

    plan = [F.Target(key="costs.touch_ms_per_mb", statistic="first_kill_s", scenarios=("a",), bounds=(0.1, 10.0))]

    def fake(scenario, policy, seed):  # the model: first kill at 1 s, never a lockup
        return {"first_kill_s": 1.0, "lockup": False}

    table = F.check([F.CheckScenario("a", {}, rows(first_kill_s=[1.0], lockup=[False]), ["first_kill_s", "lockup"]),
                     F.CheckScenario("b", {}, rows(first_kill_s=[9.0], lockup=[False]), ["first_kill_s"])],
                    plan, {}, 3, "upstream_6_1", simulate=fake)
    assert [(c.scenario, c.statistic, c.group) for c in table] == [
        ("a", "first_kill_s", "fitted"), ("a", "lockup", "fit-set"), ("b", "first_kill_s", "held-out")]
    text = agreement_counts(table)
    assert "fitted: 1/1 agree" in text and "fit-set: 1/1 agree" in text and "held-out: 0/1 agree" in text


# ------------------------------------------------------------------------------------------ reference


def test_the_reference_dataset_loads_with_its_plan():
    ref = load_reference(REFERENCE)
    assert set(ref.scenarios) >= {"normal-children", "idle-victim-no-throttling", "idle-victim-throttling",
                                  "handa-preempt-full", "handa-variant-idle-children"}
    assert [t.key for t in ref.plan][:1] == ["costs.first_touch_ms_per_mb"]
    roles = {n: s.role for n, s in ref.scenarios.items()}
    assert "check" in roles.values() and "fit" in roles.values()
    iv = ref.scenarios["idle-victim-no-throttling"]
    assert sum(bool(r.outcome.get("lockup")) for r in iv.runs) >= 7
    for s in ref.scenarios.values():
        for r in s.runs:
            assert r.provenance.get("command"), r.id  # every run says how it was made
            assert r.kind == "log" or r.provenance.get("source"), r.id


def test_a_summary_without_a_source_is_refused(tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "x.yaml").write_text((SCEN / "normal-children.yaml").read_text())
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({
        "scenarios": {"x": {"scenario": "scenarios/x.yaml", "runs": [{"id": "a", "summary": {"lockup": False}}]}}}))
    with pytest.raises(ReferenceError, match=r"scenarios\.x\.runs\[0\]: a summary run needs a source"):
        load_reference(tmp_path)


def _one_run_reference(tmp_path: Path, scenario: str, run: dict) -> Path:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "x.yaml").write_text((SCEN / f"{scenario}.yaml").read_text())
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({
        "scenarios": {"x": {"scenario": "scenarios/x.yaml", "runs": [run]}}}))
    return tmp_path


def test_a_run_booted_with_another_topology_than_its_scenario_is_refused(tmp_path):
    # idle-victim-throttling says shared_llc; a boot with one core per socket had 8 LLCs
    run = {"id": "a", "summary": {"lockup": False}, "source": "test", "smp": "8,sockets=8,cores=1,threads=1"}
    with pytest.raises(ReferenceError, match=r"scenarios\.x\.runs\[0\]\.smp: booted with -smp 8,sockets=8.*"
                                             r"core_per_socket, but the scenario's machine.topology is shared_llc"):
        load_reference(_one_run_reference(tmp_path, "idle-victim-throttling", run))


def test_a_run_without_smp_counts_as_plain_smp_and_its_log_must_show_the_scenarios_llc_groups(tmp_path):
    # the core_per_socket scenario with a run that has no smp: it was booted plain (shared_llc): refused
    run = {"id": "a", "summary": {"lockup": False}, "source": "test"}
    with pytest.raises(ReferenceError, match=r"runs\[0\]\.smp: booted with plain -smp 8"):
        load_reference(_one_run_reference(tmp_path, "idle-victim-throttling-core-per-socket", run))
    # a log whose guest printed one shared L3 cannot stand for a core_per_socket scenario, whatever smp says
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text(
        (REFERENCE / "logs" / "idle-victim-throttling" / "2026-12-02-run2.log").read_text())
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({"scenarios": {"x": {"scenario": "scenarios/x.yaml", "runs": [
        {"id": "a", "log": "logs/a.log", "smp": "8,sockets=8,cores=1,threads=1"}]}}}))
    with pytest.raises(ReferenceError, match=r"runs\[0\]\.log: the guest showed 8 CPUs, 1 socket\(s\), 1 LLC group"):
        load_reference(tmp_path)


def test_the_reference_runs_record_the_topology_they_were_booted_with():
    ref = load_reference(REFERENCE)
    tops = {n: {r.provenance["topology"] for r in s.runs} for n, s in ref.scenarios.items()}
    assert tops["idle-victim-throttling-core-per-socket"] == {"core_per_socket"}
    assert tops["idle-victim-no-throttling"] == {"shared_llc"}  # plain -smp 8, before the smp key existed


# ------------------------------------------------------------------------------------------ command


def _oomsweep(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sweeps", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_calibrate_fit_end_to_end_on_the_reference(tmp_path):
    out = tmp_path / "fitted.yaml"
    p = _oomsweep("calibrate", "fit", str(REFERENCE), "--profile", "test_tcg", "--out", str(out),
                  "--seeds", "8", "--passes", "1")
    assert p.returncode == 0, p.stderr
    ref = load_reference(REFERENCE)
    for name in ref.scenarios:
        assert name in p.stdout
    assert "fitted:" in p.stdout and "fit-set:" in p.stdout and "held-out:" in p.stdout
    # the patched 5.10 kernel's check set: its rows in the table, its own summary line (5 statistics a row)
    for c in ref.kernel_checks:
        assert c.name in p.stdout
    n510 = re.search(r"^held-out 5\.10: (\d+)/(\d+) agree", p.stdout, re.M)
    assert n510 and int(n510[2]) == 5 * len(ref.kernel_checks), p.stdout
    doc = yaml.safe_load(out.read_text())
    from oommodel.profiles import check_profile

    check_profile(doc)
    assert set(doc["values"]) == {t.key for t in ref.plan} | {t.key for t, _ in ref.measured}
    assert "Measured values" in p.stdout and "machine.idle_exit_us" in p.stdout
    for key, src in doc["sources"].items():
        assert src["runs"] and src["scenarios"], key
    assert doc["provenance"]["reference_digest"] == ref.digest
    assert any(c["set"] == "check" for c in doc["check"])
    assert {c["scenario"] for c in doc["check"] if c["set"] == "5.10"} == {c.name for c in ref.kernel_checks}


@pytest.mark.slow
def test_the_shipped_tcg_profile_reproduces_its_fit_rows():
    # --check-only: the committed qemu_tcg values against the reference; every "fit" row must agree
    # (else the profile is stale: refit with `oomsweep calibrate fit`).
    p = _oomsweep("calibrate", "fit", "--check-only", "--profile", "qemu_tcg", "--seeds", "20")
    assert p.returncode == 0, p.stderr
    counts = re.search(r"^fitted: (\d+)/(\d+) agree", p.stdout, re.M)
    assert counts and int(counts[2]) > 0 and counts[1] == counts[2], p.stdout


# ------------------------------------------------------------------------------------------ calibrate's model side


def test_calibrate_picks_the_profile_of_the_accelerator():
    from sweeps.calibrate.command import model_profile
    from sweeps.errors import UsageError

    plain = {"machine": {"cpus": 2}}
    assert model_profile(None, "tcg", plain)[0] == "qemu_tcg"
    assert model_profile(None, "", plain)[0] == "qemu_tcg"  # model rows only: compared with TCG boots
    name, why = model_profile(None, "kvm", plain)
    assert name == "bare_metal" and "no qemu_kvm profile" in why  # not measured: said, not hidden
    assert model_profile(None, "tcg", {"machine": {"profile": "bare_metal"}})[0] is None  # the scenario's own
    assert model_profile("bare_metal", "tcg", {"machine": {"profile": "qemu_tcg"}})[0] == "bare_metal"
    with pytest.raises(UsageError, match="--profile: unknown machine profile 'qemu_tgc' .*qemu_tcg"):
        model_profile("qemu_tgc", "tcg", plain)


def test_calibrate_model_rows_use_the_tcg_profile(tmp_path):
    import argparse
    import io
    import json

    from oommodel.profiles import profile_values
    from sweeps.cli.calibrate import register, run
    from sweeps.storage import dataset

    p = argparse.ArgumentParser(prog="oomsweep")
    register(p.add_subparsers(dest="command"))
    scen = ROOT / "configs" / "scenarios" / "calibrate-normal-children.yaml"
    args = p.parse_args(["calibrate", str(scen), "--runs", "0", "--seeds", "2", "--output", str(tmp_path / "ds"),
                         "--no-mlflow"])
    err = io.StringIO()
    assert run(args, stdout=io.StringIO(), stderr=err) == 0
    assert "machine profile qemu_tcg" in err.getvalue()
    df = dataset.read_sweep(tmp_path / "ds", "calibrate-normal-children")
    sc = json.loads(df["scenario_json"].iloc[0])
    assert sc["machine"]["profile"] == "qemu_tcg"
    for key, value in profile_values("qemu_tcg").items():
        section, leaf = key.split(".")
        assert sc[section][leaf] == value


# ------------------------------------------------------------------------------------------ the command line


def test_calibrate_fit_reports_bad_input_as_one_line_with_exit_2(tmp_path, oomsweep_cli):
    code, out, err = oomsweep_cli(["calibrate", "fit", str(tmp_path / "nowhere")])
    assert (code, out) == (2, "") and err.startswith("oomsweep calibrate fit: error: ") and "no manifest" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = oomsweep_cli(["calibrate", "fit", "--seeds", "0"])
    assert code == 2 and "--seeds/--passes: must be >= 1" in err
    code, _, err = oomsweep_cli(["calibrate", "fit", "--no-such-flag"])
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err  # argparse, as for every command
    code, out, _ = oomsweep_cli(["calibrate", "fit", "--help"])
    assert code == 0 and out.startswith("usage: oomsweep calibrate fit")
    code, out, _ = oomsweep_cli(["--help"])
    assert code == 0 and "calibrate-fit" not in out  # the parser's internal name is not offered

"""The fit's kernel check sets (manifest `kernel_checks:`, sweeps/calibrate/kernel_checks.py): the
patched 5.10 kernel's boots load as the `kernels table` groups them, each with its own model policy;
a bad entry is one error naming its key; the handed_over and handovers-per-kill rules judge as stated."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from sweeps.calibrate import fit as F
from sweeps.calibrate.reference import ReferenceError, load_reference

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "calibration" / "reference"


def _manifest_entry() -> dict:
    man = yaml.safe_load((REFERENCE / "manifest.yaml").read_text())
    (entry,) = man["kernel_checks"]
    return entry


def _reference_with(tmp_path: Path, entry: dict) -> Path:
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({"kernel_checks": [entry], "scenarios": {}}))
    (tmp_path / "kernel-5.10").symlink_to(REFERENCE / "kernel-5.10")
    return tmp_path


# ------------------------------------------------------------------------------------------ the manifest


def test_the_5_10_check_set_loads_one_row_per_table_group_with_its_own_policy():
    ref = load_reference(REFERENCE)
    (cs,) = ref.kernel_check_sets
    assert cs.name == "5.10" and set(cs.patch_hashes) == {"5afb5b7a6b5e", "308207c3cb5a"}
    rows = {c.name: c for c in ref.kernel_checks}
    assert len(rows) == len(cs.rows) >= 10
    assert all(c.scenario_set == "5.10" and len(c.kernel) == 8 for c in rows.values())  # 8 boots a row
    close = rows["handa-2018-11-14 handoff_rfc_v2 idle/close core_per_socket"]
    assert close.policy == "handoff_rfc_v2" and close.options == {"skip_after": "close"}
    # the model side: the boot's topology and hack, the kernel's hz / preempt / softirq, matched here
    assert close.scenario["machine"]["topology"] == "core_per_socket"
    assert close.scenario["victim"]["sched_at_handover"] == "idle"
    assert {k: close.scenario["machine"][k] for k in ("hz", "preempt", "softirq")} == {
        "hz": 1000, "preempt": "full", "softirq": "ksoftirqd_defer"}
    nohack = rows["handa-2018-11-14 handoff_rfc_v2 unchanged/pgtables shared_llc"]
    assert nohack.options == {} and nohack.scenario["victim"]["sched_at_handover"] == "unchanged"
    assert nohack.scenario["machine"]["topology"] == "shared_llc"
    # the kernel side counts before the stall, as `kernels table` does (its kills* and handovers* columns)
    hack = rows["handa-2018-11-14 handoff_rfc_v2 idle/pgtables core_per_socket"].kernel
    assert sum(o["kills_before_stall"] for o in hack) == 129
    assert sum(o["handovers_before_stall"] for o in hack) == 8 and all(o["lockup"] for o in hack)
    variant = {c.policy for c in rows.values() if c.name.startswith("handa-variant-idle-children")}
    assert variant == {"upstream_4_19", "handoff_rfc_v2"}


def test_the_check_rows_are_not_part_of_the_fit():
    ref = load_reference(REFERENCE)
    fit_scenarios = {n for t in ref.plan for n in t.scenarios}
    assert not fit_scenarios & {c.name for c in ref.kernel_checks}
    assert not set(ref.scenarios) & {c.name for c in ref.kernel_checks}


@pytest.mark.parametrize("change, message", [
    (lambda e: e["rows"][0].update(polcy="x"), r"kernel_checks\[0\]\.rows\[0\]\.polcy: unknown key"),
    (lambda e: e["rows"][0].pop("topology"), r"kernel_checks\[0\]\.rows\[0\]: topology: required key is missing"),
    (lambda e: e["rows"][0].update(topology="shared_llc", policy="direct_reap", sched_at_handover="unchanged"),
     r"kernel_checks\[0\]\.rows\[0\]: no ok boot of kernel-5.10/runs.csv .* is handa-2018-11-14 direct_reap "
     r"unchanged/pgtables shared_llc"),
    (lambda e: e["rows"][0].update(scenario="nope.yaml"), r"kernel_checks\[0\]\.rows\[0\]\.scenario: 'nope.yaml'"),
    (lambda e: e.update(compare=["lockup", "handovers"]), r"kernel_checks\[0\]\.compare\[1\]: unknown statistic"),
    (lambda e: e.update(machine={"hz": 1000}), r"kernel_checks\[0\]\.machine: must set exactly hz, preempt, softirq"),
    (lambda e: e["machine"].update(softirq="inline"),
     r"kernel_checks\[0\]\.machine\.softirq: 'inline', but kernel 5\.10\.223-oomsweep-\w+ handles softirqs "
     r"'ksoftirqd_defer'"),
    (lambda e: e.update(patch_hash=[]), r"kernel_checks\[0\]\.patch_hash: must be"),
    (lambda e: e.pop("rows"), r"kernel_checks\[0\]: rows: required key is missing"),
    (lambda e: e.update(name="check"), r"kernel_checks\[0\]\.name: 'check' is taken"),
    (lambda e: e.update(datset="x"), r"kernel_checks\[0\]\.datset: unknown key"),
])
def test_a_bad_check_entry_is_refused_naming_its_key(tmp_path, change, message):
    entry = copy.deepcopy(_manifest_entry())
    change(entry)
    with pytest.raises(ReferenceError, match=message):
        load_reference(_reference_with(tmp_path, entry))


def test_a_good_entry_in_a_reference_of_its_own_loads(tmp_path):
    entry = _manifest_entry()
    ref = load_reference(_reference_with(tmp_path, {**entry, "rows": entry["rows"][:1]}))
    assert [c.name for c in ref.kernel_checks] == ["handa-2018-11-14 handoff_rfc_v2 idle/pgtables core_per_socket"]


# ------------------------------------------------------------------------------------------ the rules


def _kernel(handovers: list[int], kills: list[int]) -> list[dict]:
    return [{"lockup": False, "kills_before_stall": k, "handovers_before_stall": h, "handed_over": h > 0}
            for h, k in zip(handovers, kills)]


def _model(handovers: list[int], kills: list[int], lockup: bool = False, pending: int = 0) -> list[dict]:
    return [{"lockup": lockup, "kills": k, "handovers": h, "handed_over": h > 0, "victims_pending_at_end": pending}
            for h, k in zip(handovers, kills)]


def test_handovers_per_kill_agree_when_the_wilson_intervals_overlap():
    kernel = _kernel([2, 1, 0, 3], [64] * 4)                        # 6/256 = 0.023 [0.011, 0.050]
    near = F.compare("s", "check", "handovers_per_kill", kernel, _model([1] * 10, [64] * 10))  # 10/640 = 0.016
    assert near.agree is True and near.rule == "Wilson 95 % intervals overlap"
    assert near.kernel == "6/256 = 0.023 [0.011, 0.050]" and near.model.startswith("10/640 = 0.016 [")
    far = F.compare("s", "check", "handovers_per_kill", kernel, _model([1] * 10, [2] * 10))   # 10/20 = 0.5
    assert far.agree is False


def test_handovers_per_kill_without_kills_is_not_judged():
    c = F.compare("s", "check", "handovers_per_kill", _kernel([0], [0]), _model([0], [5]))
    assert c.agree is None


def test_handed_over_compares_the_most_frequent_value_and_a_tie_shares_either():
    kernel = _kernel([1, 1, 0], [64] * 3)
    assert F.compare("s", "check", "handed_over", kernel, _model([1] * 6 + [0] * 4, [64] * 10)).agree is True
    assert F.compare("s", "check", "handed_over", kernel, _model([0] * 6 + [1] * 4, [64] * 10)).agree is False
    tie = _kernel([1, 0], [64, 64])                                  # True:1, False:1
    assert F.compare("s", "check", "handed_over", tie, _model([0] * 3, [64] * 3)).agree is True
    assert F.compare("s", "check", "oom_skip_by", [{"oom_skip_by": "exit"}, {"oom_skip_by": "reaper"}],
                     [{"oom_skip_by": "none"}] * 3).agree is False


def test_a_model_lockup_counts_its_kills_only_while_a_victim_is_still_pending():
    # no victim pending at the end: the model may have killed after its declared lockup, unlike the kernel
    assert F.values(_model([1], [5], lockup=True, pending=0), "kills_before_stall") == []
    assert F.values(_model([1], [5], lockup=True, pending=1), "kills_before_stall") == [5]
    assert F.values(_model([1], [5], lockup=True, pending=1), "handovers_per_kill") == [(1, 5)]
    assert F.values(_kernel([1], [7]), "kills_before_stall") == [7]


def test_the_check_runs_each_kernel_row_under_its_own_policy_and_counts_it_apart():
    from sweeps.calibrate.fit_command import agreement_counts

    seen = []

    def fake(scenario, policy, seed, **options):
        seen.append((policy, tuple(sorted(options.items()))))
        return {"lockup": False, "kills": 2, "handovers": 1, "handed_over": True, "victims_pending_at_end": 0}

    checks = [F.CheckScenario("a", {}, [{"lockup": False}], ["lockup"]),
              F.CheckScenario("k", {}, _kernel([1, 1], [64, 64]), ["handed_over", "handovers_per_kill"],
                              policy="handoff_rfc_v2", options={"skip_after": "close"}, scenario_set="5.10")]
    plan = [F.Target("costs.touch_ms_per_mb", "lockup", ("k",), (0.1, 1.0))]  # even a plan naming it: never "fitted"
    table = F.check(checks, plan, {}, 2, "upstream_6_1", simulate=fake)
    assert set(seen) == {("upstream_6_1", ()), ("handoff_rfc_v2", (("skip_after", "close"),))}
    assert [(c.scenario, c.group) for c in table] == [("a", "held-out"), ("k", "held-out 5.10"),
                                                      ("k", "held-out 5.10")]
    text = agreement_counts(table)
    assert "held-out: 1/1 agree" in text and "held-out 5.10: 1/2 agree" in text  # True; 2/128 vs 2/4
    assert text.splitlines()[-1].startswith("held-out 5.10:")

"""The `calibrate` subcommand without a boot: refusals before anything runs, model rows, the table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sweeps.storage import dataset as storage
from sweeps.calibrate.command import format_summary, row_schema, summary_table

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"




def test_handa_hack_refused_before_anything_runs(tmp_path, oomsweep_cli):
    code, out, err = oomsweep_cli(["calibrate", str(SCENARIOS / "handa-2018-11-14.yaml"), "--match-kernel", "--runs", "3",
                           "--output", str(tmp_path / "ds"), "--no-mlflow"])
    assert code == 2 and out == ""
    assert "refused: victim.sched_at_handover: " in err and "stock kernel" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ds").exists()


def test_unknown_policy_is_bad_input(tmp_path, oomsweep_cli):
    code, _, err = oomsweep_cli(["calibrate", str(SCENARIOS / "calibrate-normal-children.yaml"), "--runs", "0",
                         "--policy", "upstream_6_2", "--output", str(tmp_path / "ds"), "--no-mlflow"])
    assert code == 2 and "--policy" in err and "upstream_6_1" in err


def test_model_rows_only(tmp_path, oomsweep_cli):
    ds = tmp_path / "ds"
    argv = ["calibrate", str(SCENARIOS / "calibrate-normal-children.yaml"), "--runs", "0", "--seeds", "2",
            "--output", str(ds), "--no-mlflow"]
    code, out, _ = oomsweep_cli(argv)
    assert code == 0
    df = storage.read_sweep(ds, "calibrate-normal-children")
    assert len(df) == 2 and set(df["source"]) == {"model"} and set(df["policy"]) == {"upstream_6_1"}
    assert sorted(df["replicate"]) == [0, 1] and df["seed"].nunique() == 2
    assert "model" in out and "upstream_6_1" in out
    # the model side runs the TCG profile by default: its fitted values, not the bare-metal defaults
    import json

    from oommodel.profiles import profile_values

    machine, costs = (json.loads(df["scenario_json"].iloc[0])[k] for k in ("machine", "costs"))
    tcg = profile_values("qemu_tcg")
    assert machine["profile"] == "qemu_tcg" and machine["ksoftirqd_wake_hz"] == tcg["machine.ksoftirqd_wake_hz"]
    assert costs["unmap_ms_per_gb"] == tcg["costs.unmap_ms_per_gb"] != 34.0
    argv[argv.index("--seeds") + 1] = "3"  # one more replicate; the stored two are not redone
    code, _, err = oomsweep_cli(argv)
    assert code == 0 and "1 replicate(s) simulated (2 already stored)" in err
    assert len(storage.read_sweep(ds, "calibrate-normal-children")) == 3


def test_schema_adds_source_columns():
    from oommodel import Scenario

    sc = Scenario.from_yaml(SCENARIOS / "calibrate-normal-children.yaml").to_dict()
    names = row_schema(sc).names
    assert names[-7:] == ["source", "accelerator", "kernel_release", "qemu_smp", "qemu_command", "guest_topology",
                          "guest_llc_groups"]
    assert "cpu_s.children" in names and "lockup" in names and "scenario_json" in names


def test_summary_table_wilson_and_stalls():
    df = pd.DataFrame({
        "source": ["kernel"] * 3 + ["model"] * 2,
        "policy": ["kernel"] * 3 + ["upstream_6_1"] * 2,
        "accelerator": ["tcg"] * 3 + [""] * 2,
        "status": ["ok", "ok", "timeout", "ok", "ok"],
        "lockup": [True, False, None, False, False],
        "max_stall_s": [20.0, 2.03, math.nan, 2.005, 2.004],
        "kills": [1, 1, 0, 1, 1],
        "first_kill_s": [3.5, 3.6, math.nan, 3.0, 3.0],
        "first_skip_s": [math.nan, 5.6, math.nan, 5.0, 5.0],
        "oom_skip_by": ["none", "reaper", "none", "reaper", "reaper"],
    })
    lines = {ln["source"]: ln for ln in summary_table(df)}
    k = lines["kernel"]
    assert (k["n"], k["lockups"], k["not_ok"]) == (2, 1, 1)
    assert k["lockup_probability"] == 0.5 and 0.09 < k["ci_low"] < 0.1 and 0.9 < k["ci_high"] < 0.91  # Wilson 1/2
    assert k["max_stall_s"] == 20.0 and k["oom_skip_by"] == "none:1,reaper:1"
    assert lines["model"]["lockups"] == 0 and lines["model"]["ci_high"] < 0.85
    text = format_summary(summary_table(df))
    assert text.splitlines()[0].startswith("source") and "0.500 [0.095, 0.905]" in text


def test_kernel_rows_carry_the_exit_waits(tmp_path, monkeypatch, oomsweep_cli):
    # No QEMU: the boot returns the recorded console of Handa's first variant (preempt=full, TCG;
    # fixtures/handa-variant.log). The kernel row must hold exits_pending_max / exit_delay_max_s,
    # and the boot must have been asked for preempt=full.
    from sweeps.calibrate import qemu

    kernel = tmp_path / "vmlinuz-6.1.0-56-amd64"
    kernel.write_bytes(b"")
    (tmp_path / "config-6.1.0-56-amd64").write_text("CONFIG_HZ=250\n")
    console = (Path(__file__).parent / "fixtures" / "handa-variant.log").read_text()
    seen = []

    def fake_boot(kernel, initramfs, settings, *, cpus, cmdline, accelerator, limit_s, **kw):
        seen.append(cmdline)
        return qemu.Boot(console, accelerator, 1.0, False, 0, ("qemu",))

    monkeypatch.setattr(qemu, "find_kernel", lambda path=None: kernel)
    monkeypatch.setattr(qemu, "base_initramfs", lambda: tmp_path / "base.cpio")
    monkeypatch.setattr(qemu, "choose_accelerator", lambda k, wanted="auto": "tcg")
    monkeypatch.setattr(qemu, "boot", fake_boot)
    ds = tmp_path / "ds"
    code, out, err = oomsweep_cli(["calibrate", str(SCENARIOS / "handa-variant-idle-children.yaml"), "--match-kernel",
                           "--runs", "1", "--seeds", "0", "--output", str(ds), "--no-mlflow"])
    assert code == 0, err
    head = next(ln for ln in out.splitlines() if ln.startswith("source"))
    kernel_line = next(ln for ln in out.splitlines() if ln.startswith("kernel"))
    assert "exits pending" in head and "exit delay" in head
    assert kernel_line.split()[-4] == "31"  # the summary table shows the waits too
    assert len(seen) == 1 and " preempt=full " in seen[0]
    assert "exits pending max 31" in err and "preempt=full" in err
    row = storage.read_sweep(ds, "calibrate-handa-variant-idle-children").iloc[0]
    assert row["source"] == "kernel" and row["status"] == "ok"
    assert row["exits_pending_max"] == 31 and 4.0 < row["exit_delay_max_s"] < 5.0


def _topology_lines(llc_lists: list[str], packages: list[int]) -> str:
    """What infra/qemu/init prints about the guest's CPUs (one line per CPU)."""
    return "".join(f"@@oomsweep-topology cpu={c} package={p} llc={llc} sched_domains={'MC' if p == 0 else 'DIE'}\n"
                   for c, (llc, p) in enumerate(zip(llc_lists, packages)))


def _boot_with_topology(tmp_path, monkeypatch, oomsweep_cli, topology: str, guest: str):
    """`calibrate` of the idle-victim scenario with machine.topology set; the fake boot returns a recorded
    console plus `guest` topology lines and records the -smp it was asked for."""
    import yaml

    from sweeps.calibrate import qemu

    kernel = tmp_path / "vmlinuz-6.1.0-56-amd64"
    kernel.write_bytes(b"")
    (tmp_path / "config-6.1.0-56-amd64").write_text("CONFIG_HZ=250\n")
    console = guest + (Path(__file__).parent / "fixtures" / "idle-victim-reaped.log").read_text()
    asked = []

    def fake_boot(kernel, initramfs, settings, *, cpus, cmdline, accelerator, limit_s, smp=None, **kw):
        asked.append(smp)
        return qemu.Boot(console, accelerator, 1.0, False, 0, ("qemu-system-x86_64", "-smp", smp or str(cpus)))

    monkeypatch.setattr(qemu, "find_kernel", lambda path=None: kernel)
    monkeypatch.setattr(qemu, "base_initramfs", lambda: tmp_path / "base.cpio")
    monkeypatch.setattr(qemu, "choose_accelerator", lambda k, wanted="auto": "tcg")
    monkeypatch.setattr(qemu, "boot", fake_boot)
    sc = yaml.safe_load((SCENARIOS / "calibrate-idle-victim-no-throttling.yaml").read_text())
    sc["machine"]["topology"] = topology
    path = tmp_path / "ivnt.yaml"
    path.write_text(yaml.safe_dump(sc))
    ds = tmp_path / "ds"
    code, out, err = oomsweep_cli(["calibrate", str(path), "--runs", "1", "--seeds", "2", "--output", str(ds),
                                   "--no-mlflow"])
    df = storage.read_sweep(ds, "calibrate-ivnt")
    return code, out, err, asked, df


def test_core_per_socket_boots_as_eight_sockets_and_the_row_says_what_the_guest_saw(tmp_path, monkeypatch,
                                                                                    oomsweep_cli):
    guest = _topology_lines([str(c) for c in range(8)], list(range(8)))
    code, out, err, asked, df = _boot_with_topology(tmp_path, monkeypatch, oomsweep_cli, "core_per_socket", guest)
    assert code == 0, err
    assert asked == ["8,sockets=8,cores=1,threads=1"]
    k = df[df["source"] == "kernel"].iloc[0]
    assert k["status"] == "ok" and k["qemu_smp"] == "8,sockets=8,cores=1,threads=1"
    assert "-smp 8,sockets=8,cores=1,threads=1" in k["qemu_command"]
    assert k["guest_llc_groups"] == 8 and "8 socket(s), 8 LLC group(s)" in k["guest_topology"]
    table = {ln.split()[0]: ln.split()[3] for ln in out.splitlines() if ln.startswith(("kernel", "model"))}
    assert table == {"kernel": "core_per_socket", "model": "core_per_socket"}
    assert "not comparable" not in out


def test_a_guest_showing_another_llc_grouping_makes_the_row_an_error(tmp_path, monkeypatch, oomsweep_cli):
    guest = _topology_lines(["0-7"] * 8, [0] * 8)  # what plain -smp 8 shows: one L3 for all
    code, _, err, asked, df = _boot_with_topology(tmp_path, monkeypatch, oomsweep_cli, "core_per_socket", guest)
    assert code == 1 and asked == ["8,sockets=8,cores=1,threads=1"]
    k = df[df["source"] == "kernel"].iloc[0]
    assert k["status"] == "error" and k["error"].startswith("machine.topology: core_per_socket asks for 8 LLC")
    assert k["guest_llc_groups"] == 1


def test_shared_llc_boots_as_one_socket(tmp_path, monkeypatch, oomsweep_cli):
    guest = _topology_lines(["0-7"] * 8, [0] * 8)
    code, out, err, asked, df = _boot_with_topology(tmp_path, monkeypatch, oomsweep_cli, "shared_llc", guest)
    assert code == 0, err
    assert asked == ["8,sockets=1,cores=8,threads=1"]
    assert df[df["source"] == "kernel"].iloc[0]["guest_llc_groups"] == 1


def test_old_kernel_rows_count_as_plain_smp_and_are_flagged_beside_core_per_socket_model_rows():
    from sweeps.calibrate.command import topology_mismatch

    sj = '{"machine": {"cpus": 8, "topology": "core_per_socket"}}'
    df = pd.DataFrame({
        "source": ["kernel", "model"], "policy": ["kernel", "upstream_6_1"], "accelerator": ["tcg", ""],
        "status": ["ok", "ok"], "lockup": [False, False], "max_stall_s": [1.0, 1.0], "kills": [1, 1],
        "first_kill_s": [3.0, 3.0], "first_skip_s": [5.0, 5.0], "oom_skip_by": ["exit", "exit"],
        "scenario_json": [sj, sj], "qemu_smp": [None, None],
    })
    lines = summary_table(df)
    assert {ln["source"]: ln["topology"] for ln in lines} == {"kernel": "shared_llc (plain -smp)",
                                                             "model": "core_per_socket"}
    assert "not comparable" in topology_mismatch(lines)


def test_boots_of_two_kernel_policies_are_two_lines_with_their_handovers():
    # Old rows of a built kernel sit under the plain "kernel" partition: their options say the policy.
    import json

    def opts(policy, skip_after="pgtables"):
        return json.dumps({"kernel": "5.10-oomsweep", "kernel_policy": policy, "skip_after": skip_after})

    df = pd.DataFrame({
        "source": ["kernel"] * 4 + ["kernel", "model", "model"],
        "policy": ["kernel", "kernel", "kernel", "5.10-oomsweep:handoff_rfc_v2[skip_after=close]", "kernel",
                   "handoff_rfc_v2", "handoff_rfc_v2"],
        "policy_options": [opts("handoff_rfc_v2"), opts("handoff_rfc_v2"), opts("upstream_4_19"),
                           opts("handoff_rfc_v2", "close"), json.dumps({"release": "6.1.0-56-amd64"}),
                           '{"skip_after":"pgtables"}', '{"skip_after":"pgtables"}'],
        "accelerator": ["tcg"] * 5 + [""] * 2,
        "status": ["ok"] * 7,
        "lockup": [True, False, False, True, False, True, True],
        "max_stall_s": [20.0, 0.1, 0.1, 20.0, 0.1, 118.0, 118.0],
        "kills": [9, 64, 64, 10, 1, 2, 4],
        "handovers": [1, 0, 0, 1, 0, 1, 1],
        "handed_over": [True, False, False, True, False, True, True],
        "first_kill_s": [0.4] * 7,
        "first_skip_s": [0.5] * 7,
        "oom_skip_by": ["reaper"] * 7,
    })
    lines = {ln["policy"]: ln for ln in summary_table(df)}
    assert sorted(lines) == ["5.10-oomsweep:handoff_rfc_v2", "5.10-oomsweep:handoff_rfc_v2[skip_after=close]",
                             "5.10-oomsweep:upstream_4_19", "handoff_rfc_v2", "kernel"]
    rfc = lines["5.10-oomsweep:handoff_rfc_v2"]
    assert (rfc["n"], rfc["runs_handed_over"], rfc["handovers"], rfc["handover_kills"]) == (2, 1, 1, 73)
    assert lines["kernel"]["handovers"] is None  # a stock kernel has no "Handed over" printk
    text = format_summary(summary_table(df)).splitlines()
    assert "handed over" in text[0] and "handovers/kill [95% CI]" in text[0]
    row = {ln.split()[1]: ln for ln in text[1:]}
    assert "1/2" in row["5.10-oomsweep:handoff_rfc_v2"] and "1/73 = 0.014 [0.002, 0.074]" in row["5.10-oomsweep:handoff_rfc_v2"]
    assert "2/6 = 0.333 [0.097, 0.700]" in row["handoff_rfc_v2"]
    assert " - " in row["kernel"]

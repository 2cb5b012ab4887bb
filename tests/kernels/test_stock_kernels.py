"""Stock Debian images named in infra/qemu/kernels (6.12 from bookworm-backports), without a boot.

What is checked: the definition pins a package, version and checksum; an unfetched or unknown name
is refused naming the fetch command; a fetched image becomes a KernelSpec whose facts (HZ,
preemption, softirq handling) come from its config and release; a stock row reads MMF_OOM_SKIP
from the reaper's line, and the watchdog's softirq dump says which CPU's ksoftirqd starved.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oommodel import Scenario
from sweeps.calibrate import kernels as K
from sweeps.calibrate import qemu
from sweeps.calibrate import stock_kernels as S
from sweeps.calibrate.translate import kernel_facts
from sweeps.errors import QemuError

ROOT = Path(__file__).resolve().parents[2]
IDLE_VICTIM = ROOT / "configs" / "scenarios" / "calibrate-idle-victim-no-throttling.yaml"
LOGS = ROOT / "calibration" / "reference" / "logs" / "idle-victim-no-throttling"


def test_the_6_12_definition_pins_a_backports_package_and_its_checksum():
    d = S.defined()["6.12"]
    assert d["SUITE"] == "bookworm-backports"
    assert re.fullmatch(r"linux-image-6\.12\.\d+\+deb12-amd64", d["PKG"])
    assert d["VERSION"].startswith(d["PKG"].split("-")[2].split("+")[0] + "-")
    assert re.fullmatch(r"[0-9a-f]{64}", d["SHA256"])
    assert S.is_name("6.12") and not S.is_name("/boot/vmlinuz-6.12") and not S.is_name("5.10-oomsweep")


def fake_fetch(cache: Path, name: str = "6.12", release: str = "6.12.95+deb12-amd64") -> Path:
    d = S.defined()[name]
    out = cache / name
    out.mkdir(parents=True)
    (out / f"vmlinuz-{release}").write_bytes(b"")
    (out / f"config-{release}").write_text("CONFIG_HZ=250\nCONFIG_PREEMPT_VOLUNTARY=y\nCONFIG_PREEMPT_DYNAMIC=y\n")
    (out / "PACKAGE").write_text(f"{d['PKG']}={d['VERSION']}\n")
    (out / ".complete").write_text("")
    return out / f"vmlinuz-{release}"


def test_unfetched_and_unknown_names_are_refused_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("OOMSWEEP_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(QemuError, match=r"6\.12 .* is not fetched: run infra/qemu/fetch-kernel.sh 6\.12"):
        qemu.find_kernel("6.12")
    with pytest.raises(K.KernelError, match="infra/qemu/fetch-kernel.sh 6.12"):
        K.load("6.12")
    with pytest.raises(K.KernelError, match=r"unknown kernel '6\.13'.*stock images in infra/qemu/kernels: .*6\.12"):
        K.load("6.13")


def test_a_fetched_image_is_a_stock_spec_with_its_configs_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("OOMSWEEP_KERNEL_CACHE", str(tmp_path))
    image = fake_fetch(tmp_path)
    assert qemu.find_kernel("6.12") == image
    spec = K.load("6.12")
    assert (spec.stock, spec.hz, spec.preempt, spec.preempt_dynamic) == (True, 250, "voluntary", True)
    assert spec.policies == (S.STOCK_POLICY,) and spec.cmdline_extra("stock") == ""
    assert kernel_facts(image).softirq == "inline"  # the 6.5 revert: softirqs run on irq exit again
    sc = Scenario.from_yaml(IDLE_VICTIM).to_dict()
    with pytest.raises(K.KernelError, match="no oomsweep.sched_at_handover= hack"):
        spec.check(None, "idle")
    _, cmdline, policy, _ = K.boot_plan(sc, spec, None, match=True)
    assert policy == "stock" and "oomsweep." not in cmdline


def test_softirq_handling_follows_the_release():
    assert [S.softirq_of(r) for r in ("4.4.0", "4.19.0", "5.10.223-oomsweep-1", "6.1.0-57-amd64",
                                      "6.5.0", "6.12.95+deb12-amd64")] == \
        ["inline", "ksoftirqd_defer", "ksoftirqd_defer", "ksoftirqd_defer", "inline", "inline"]


def test_stock_rows_read_the_reaper_line_and_the_starved_ksoftirqd(tmp_path, monkeypatch):
    monkeypatch.setenv("OOMSWEEP_KERNEL_CACHE", str(tmp_path))
    fake_fetch(tmp_path)
    spec = K.load("6.12")
    # 6.1 boots of the same scenario: one reaped by the 2 s timer, one stuck behind ksoftirqd/0
    reaped = K.kernel_columns((LOGS / "2026-11-25-run2.log").read_text(), spec, "stock", "unchanged", "pgtables")
    assert (reaped["skip_by_first"], reaped["kill_to_reap_s"], reaped["ksoftirqd_starved_cpus"]) == \
        ("reaper", "2.028", "")
    stuck = K.kernel_columns((LOGS / "2026-12-02-run0.log").read_text(), spec, "stock", "unchanged", "pgtables")
    # the reap 21 s after the kill came only once the watchdog had freed CPU 0 and ksoftirqd/0 ran the timer
    assert (stuck["skip_by_first"], stuck["reaped_after_stall"], stuck["ksoftirqd_starved_cpus"]) == \
        ("reaper", 1, "0")
    assert reaped["reaped_after_stall"] == 0
    assert stuck["instrument_errors"] == "" and stuck["package"].startswith("linux-image-6.12")


def test_a_stock_table_counts_starved_ksoftirqd_boots_and_late_reaps(tmp_path):
    cols = ["scenario", "kernel_policy", "sched_at_handover", "skip_after", "accelerator", "status", "lockup",
            "kills", "handovers", "skip_by_exit", "skip_by_reaper", "skip_by_timeout", "kill_to_handover_s",
            "kill_to_reap_s", "reaped_after_stall", "ksoftirqd_starved_cpus"]
    key = ["i.yaml", "stock", "unchanged", "pgtables", "tcg", "ok"]
    rows = [
        key + ["True", "1", "0", "0", "1", "0", "", "21.5", "1", "0"],
        key + ["False", "1", "0", "0", "1", "0", "", "2.0", "0", ""],
        key + ["False", "1", "0", "1", "0", "0", "", "", "0", ""],
    ]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(",".join(r) for r in [cols] + rows) + "\n")
    line = next(ln for ln in K.summarize(path).splitlines() if "i.yaml" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[8:10] == ["1", "0.33 [0.06, 0.79]"]
    assert cells[13] == "exit 1, reaper 2 (1 after the stall)"
    assert cells[15:] == ["1", "11.750 / 21.500 s"]


def test_measure_refuses_a_setting_that_is_not_an_absolute_path_before_booting(tmp_path, capsys):
    rc = K.main(["measure", str(IDLE_VICTIM), "--kernel", "6.12", "--out", str(tmp_path),
                 "--setting", "fair_server/cpu0/runtime=0"])
    assert rc == 2 and "--setting: 'fair_server/cpu0/runtime=0' is not PATH=VALUE" in capsys.readouterr().out
    assert not (tmp_path / "runs.csv").exists()

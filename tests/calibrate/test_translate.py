"""Scenario -> reproducer parameters, and the refusals that name the key path."""

from __future__ import annotations

import copy
from pathlib import Path
import subprocess
import shutil

import pytest

from oommodel import Scenario
from sweeps.errors import CalibrationRefused
from sweeps.calibrate.translate import KernelFacts, match_kernel, translate
from sweeps.calibrate.qemu import newc_archive

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"

FACTS = KernelFacts("6.1.0-56-amd64", 250)


def _load(name: str) -> dict:
    return Scenario.from_yaml(SCENARIOS / f"{name}.yaml").to_dict()


def _refusal(scenario: dict) -> CalibrationRefused:
    with pytest.raises(CalibrationRefused) as info:
        translate(scenario, FACTS)
    assert str(info.value).startswith(info.value.path + ": ")
    return info.value


def test_handa_priority_hack_is_refused_with_its_reason():
    exc = _refusal(_load("handa-2018-11-14"))
    assert exc.path == "victim.sched_at_handover"
    assert "handover point" in str(exc) and "stock kernel" in str(exc)


def test_hack_is_refused_even_after_matching_the_kernel():
    sc, _ = match_kernel(_load("handa-2018-11-14"), FACTS)
    assert _refusal(sc).path == "victim.sched_at_handover"


def test_build_time_settings_are_refused_unless_matched():
    sc = _load("handa-variant-idle-children")
    exc = _refusal(sc)
    assert exc.path == "machine.hz" and "CONFIG_HZ=250" in str(exc) and "--match-kernel" in str(exc)
    sc["machine"]["hz"] = 250
    sc["machine"]["softirq"] = "inline"  # the file says ksoftirqd_defer, as Handa's 4.20 and this 6.1 do
    assert _refusal(sc).path == "machine.softirq"
    matched, changes = match_kernel(_load("handa-variant-idle-children"), FACTS)
    assert changes == ["machine.hz: 1000 -> 250"]
    inline = _load("handa-variant-idle-children")
    inline["machine"]["softirq"] = "inline"
    assert match_kernel(inline, FACTS)[1] == ["machine.hz: 1000 -> 250", "machine.softirq: 'inline' -> 'ksoftirqd_defer'"]
    Scenario.from_dict(matched)  # still a valid scenario
    translate(matched, FACTS)


@pytest.mark.parametrize(
    "edit, path",
    [
        (lambda s: s["groups"][0].update(threads_per_process=2), "groups[0].threads_per_process"),
        (lambda s: s["oom"].update(domain="global"), "oom.domain"),
        (lambda s: s["oom"].update(limit_mb=4000), "oom.limit_mb"),
        (lambda s: s.update(oom=None), "oom"),
        (lambda s: s["victim"]["memory"].update(anon=0.5, mlocked=0.5), "victim.memory.mlocked"),
        (lambda s: s["reaper"].update(busy_elsewhere_p=0.5), "reaper.busy_elsewhere_p"),
        (lambda s: s["mmap_sem"].update(writer_at_kill_p=0.1), "mmap_sem.writer_at_kill_p"),
        (lambda s: s["costs"].update(close_blocks_on_memory_p=0.2), "costs.close_blocks_on_memory_p"),
        (lambda s: s["machine"].update(cpus=128), "machine.cpus"),
    ],
)
def test_inexpressible_features_name_their_key(edit, path):
    sc = copy.deepcopy(_load("calibrate-normal-children"))
    edit(sc)
    assert _refusal(sc).path == path


def test_watchdog_needs_a_cpu_without_rt_children():
    sc = _load("calibrate-idle-victim-no-throttling")
    for g in sc["groups"]:
        g["cpus"] = None
    sc["groups"][1]["cpus"] = None
    exc = _refusal(sc)
    assert exc.path == "groups[1].cpus" and "watchdog" in str(exc)


def test_handa_variant_translation():
    sc, _ = match_kernel(_load("handa-variant-idle-children"), FACTS)
    plan = translate(sc, FACTS, seed=3)
    assert plan.cpus == 8 and plan.preempt == "full" and plan.watchdog_cpu == 7
    assert plan.memory_max_bytes == 100 * 1024 * 1024
    kids = plan.children
    assert len(kids) == 64
    assert [k.policy for k in kids[:32]] == ["idle"] * 32 and {k.policy for k in kids[32:]} == {"fifo"}
    assert {k.rt_priority for k in kids[32:]} == {99} and {k.cpus for k in kids} == {(0,)}
    assert {k.bytes for k in kids} == {200 * 1024 * 1024} and {k.oom_score_adj for k in kids} == {1000}
    starts = [k.start_us for k in kids]
    assert all(0 <= s <= 50_000 for s in starts) and len(set(starts)) > 50  # drawn per child
    assert translate(sc, FACTS, seed=3) == plan  # deterministic for a seed
    assert translate(sc, FACTS, seed=4).children != plan.children
    text = plan.conf_text(5)
    assert "run 5\n" in text and "watchdog_cpu 7\n" in text
    assert "sysctl /sys/kernel/debug/sched/features RT_RUNTIME_SHARE\n" in text
    assert "child children_fifo 0 allocator fifo 99 0 1 209715200 1000 " in text
    assert "preempt=full" in plan.cmdline()


def test_rt_runtime_is_written_after_the_period():
    sc = _load("calibrate-idle-victim-no-throttling")
    plan = translate(sc, FACTS)
    paths = [p for p, _ in plan.sysctls]
    assert plan.sysctls[:2] == (("/proc/sys/kernel/sched_rt_runtime_us", "-1"),
                                ("/proc/sys/kernel/sched_rt_period_us", "1000000"))
    assert paths.count("/proc/sys/kernel/sched_rt_runtime_us") == 1  # -1 stays -1: throttling off
    assert ("/proc/sys/kernel/hung_task_timeout_secs", "20") in plan.sysctls
    assert [k.role for k in plan.children] == ["sleeper", "allocator"]
    assert plan.children[1].start_us == 3_000_000


def test_reaper_attributes_are_passed_on():
    sc = _load("calibrate-normal-children")
    sc["reaper"] = {**sc["reaper"], "cpus": [1], "sched": {"policy": "fifo", "rt_priority": 10}}
    assert translate(sc, FACTS).reaper == "reaper fifo 10 0 2"
    assert translate(_load("calibrate-normal-children"), FACTS).reaper == ""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_newc_archive_unpacks_with_cpio(tmp_path):
    data = newc_archive({"oomrepro.conf": b"run 1\n", "b.txt": b"xyz"})
    assert len(data) % 512 == 0
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "oomrepro.conf").read_bytes() == b"run 1\n"
    assert (tmp_path / "b.txt").read_bytes() == b"xyz"


@pytest.mark.parametrize("topology, smp, llc_groups", [
    ("shared_llc", "8,sockets=1,cores=8,threads=1", 1),
    ("core_per_socket", "8,sockets=8,cores=1,threads=1", 8),
    ({"sockets": 2, "cores_per_socket": 4}, "8,sockets=2,cores=4,threads=1", 2),
    ({"sockets": 8, "cores_per_socket": 1, "llc": "core"}, "8,sockets=8,cores=1,threads=1", 8),
])
def test_machine_topology_becomes_qemus_smp(topology, smp, llc_groups):
    from sweeps.calibrate.translate import GuestTopology

    sc = _load("calibrate-idle-victim-no-throttling")
    sc["machine"]["topology"] = topology
    sc = Scenario.from_dict(sc).to_dict()
    plan = translate(sc, FACTS)
    assert plan.smp == smp and plan.topology.llc_groups == llc_groups
    assert GuestTopology.from_smp(smp) == plan.topology  # what a stored row's qemu_smp reads back as


def test_a_topology_qemu_cannot_present_is_refused_naming_the_key():
    sc = _load("calibrate-idle-victim-no-throttling")
    sc["machine"]["topology"] = {"sockets": 2, "cores_per_socket": 4, "llc": "core"}
    exc = _refusal(Scenario.from_dict(sc).to_dict())
    assert exc.path == "machine.topology.llc" and "one L3" in str(exc)

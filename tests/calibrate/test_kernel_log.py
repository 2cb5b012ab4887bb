"""The kernel-log parser on excerpts of boots this harness recorded (tests/calibrate/fixtures).

normal-children.log: calibrate-normal-children.yaml, 2 vCPUs, TCG: four SCHED_NORMAL children
each killed, the victim exits itself. idle-victim-lockup.log: calibrate-idle-victim-no-throttling
.yaml, 8 vCPUs, TCG: the SCHED_IDLE victim is never reaped (the reaper's timer waits behind
ksoftirqd/0, state R, TIMER counter of CPU0 frozen) until the watchdog steps in.
idle-victim-reaped.log: same scenario, the reaper's 2 s timer fired. handa-variant.log: Handa's
first variant (32 SCHED_IDLE + 32 SCHED_FIFO-99 children on CPU 0), 8 vCPUs, TCG.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from sweeps.errors import KernelLogError
from sweeps.calibrate.kernel_log import kernel_lines, parse_run, stall_intervals_max

FIXTURES = Path(__file__).parent / "fixtures"


def _run(name: str, groups: tuple[str, ...] = ()):
    return parse_run((FIXTURES / name).read_text(), groups)


def test_normal_children_every_child_killed_no_stall():
    r = _run("normal-children.log", ("children",))
    o = r.outcome
    assert r.end_reason == "done" and not r.errors and not r.settings_failed
    assert o["kills"] == 4 and not o["lockup"] and o["lockup_reason"] == ""
    assert o["oom_skip_by"] == "exit" and o["released_by"] == "exit"
    assert o["victims_pending_at_end"] == 0 and o["reaper_attempts"] == 0
    assert o["first_kill_s"] == pytest.approx(5.972359 - 5.383053)
    # MMF_OOM_SKIP: memory came back (the watchdog's "progress" line) before the victim's exit was seen
    assert o["first_skip_s"] == pytest.approx(6.035287 - 5.383053)
    assert o["first_progress_s"] == pytest.approx(6.035287 - 5.383053)
    assert o["extra_kills"] == 0 and r.kills_before_exit == 0  # each victim had exited before the next kill
    assert 0.0 < o["max_stall_s"] < 0.1
    assert o["oom_calls"] == 32 and not o["panic"] and not o["handed_over"]
    assert o["memory_freed_mb"] == pytest.approx((45120 + 516 + 124 + 70160 + 516 + 176 + 68712 + 516 + 172
                                                  + 102864 + 516 + 240) / 1024)
    assert o["cpu_s"]["children"] == pytest.approx(0.312683 + 0.302823 + 0.377413 + 0.619380)
    assert math.isnan(o["cpu_s"]["victim"]) and o["cpu_s"]["oom_reaper"] == 0.0
    assert len(r.kill_to_exit_s) == 4 and max(r.kill_to_exit_s) < 0.1
    assert r.kill_to_reap_s == () and r.rcu_stalls == 0


def test_idle_victim_lockup_behind_starved_ksoftirqd():
    r = _run("idle-victim-lockup.log", ("idle_holder", "rt_allocator"))
    o = r.outcome
    assert r.end_reason == "stall"
    assert o["lockup"] and o["lockup_reason"] == "watchdog_stall+rcu_stall"
    assert o["kills"] == 1 and o["oom_skip_by"] == "none" and o["first_skip_s"] is None
    assert o["victims_pending_at_end"] == 1 and o["reaper_attempts"] == 0  # the reap after the watchdog does not count
    assert o["max_stall_s"] == pytest.approx(20.0, abs=0.05)
    assert o["oom_calls"] == 17190 and r.rcu_stalls == 1
    assert len(r.reaped_after_watchdog_s) == 1 and 0 < r.reaped_after_watchdog_s[0] < 0.1
    text = (FIXTURES / "idle-victim-lockup.log").read_text()
    timer = [line for line in text.splitlines() if line.strip().startswith("TIMER:")]
    assert len(timer) == 2 and timer[0].split()[1] == timer[1].split()[1]  # CPU0's TIMER softirqs frozen over 1 s
    assert re.search(r"ksoftirqd/0 pid=\d+ state=R", text)


def test_idle_victim_reaped_by_the_timer():
    r = _run("idle-victim-reaped.log")
    o = r.outcome
    assert not o["lockup"] and o["kills"] == 1 and o["oom_skip_by"] == "reaper"
    assert len(r.kill_to_reap_s) == 1 and 2.0 <= r.kill_to_reap_s[0] < 2.1  # OOM_REAPER_DELAY = 2*HZ
    assert o["reaper_attempts"] == 1 and o["victims_pending_at_end"] == 0 and r.end_reason == "done"
    # the stall runs from the first failing charge after the kill to the memory the reap gave back
    assert o["max_stall_s"] == pytest.approx(r.kill_to_reap_s[0], abs=0.05)
    assert o["first_skip_s"] == pytest.approx(o["first_kill_s"] + r.kill_to_reap_s[0])


def test_handa_variant_fifo_children_die_first():
    r = _run("handa-variant.log", ("children_idle", "children_fifo"))
    o = r.outcome
    assert o["kills"] == 64 and not o["lockup"] and o["oom_skip_by"] == "exit" and o["extra_kills"] == 0
    # preempt=full: killed FIFO children wait runnable behind the others after mmput (section 4)
    assert r.kills_before_exit > 10 and max(r.kill_to_exit_s) > 1.0
    # ...but the next kill shows MMF_OOM_SKIP long before the first victim's exit is seen
    assert o["first_skip_s"] - o["first_kill_s"] < 0.5 < r.kill_to_exit_s[0]
    assert 0.1 < o["max_stall_s"] < 5.0 and o["oom_calls"] > 100
    lines = kernel_lines((FIXTURES / "handa-variant.log").read_text())
    group = {}
    order = []
    for _, msg in lines:
        if m := re.match(r"oomsweep: child child=\d+ group=(\S+) index=\d+ pid=(\d+)", msg):
            group[m.group(2)] = m.group(1)
        if m := re.search(r"Killed process (\d+)", msg):
            order.append(group[m.group(1)])
    assert order == ["children_fifo"] * 32 + ["children_idle"] * 32  # real-kernel-6.1.md section 1


def test_boot_that_never_started_the_reproducer():
    with pytest.raises(KernelLogError, match="never started"):
        parse_run("[    0.000000] Linux version 6.1.0-56-amd64\n[    1.0] Kernel panic - not syncing\n")


def test_failed_settings_and_errors_are_reported():
    text = (FIXTURES / "normal-children.log").read_text()
    text = text.replace("@@oomsweep-preempt", "@@oomsweep-setting-failed /sys/kernel/debug/sched/features=X\n"
                        "@@oomsweep-preempt")
    r = parse_run(text)
    assert r.settings_failed == ("/sys/kernel/debug/sched/features=X",)


def test_stall_intervals():
    assert stall_intervals_max([1.0, 2.0, 3.0], [0.5, 1.5, 2.9], 3.0, trailing=False) == pytest.approx(0.5)
    assert stall_intervals_max([1.0], [0.9, 1.2], 10.0, trailing=True) == pytest.approx(8.8)
    assert stall_intervals_max([1.0], [0.9, 1.2], 10.0, trailing=False) == pytest.approx(0.1)
    assert stall_intervals_max([1.0, 5.0], [], 10.0, trailing=True) == 0.0  # no failing charge, no stall



def test_the_guests_topology_lines_of_two_real_boots():
    # 2026-12-02 boots of 6.1 under TCG (calibration/reference): -smp 8,sockets=8,cores=1 and sockets=1,cores=8
    from sweeps.calibrate.kernel_log import guest_topology

    logs = Path(__file__).resolve().parents[2] / "calibration" / "reference" / "logs"
    per_socket = guest_topology((logs / "idle-victim-throttling-core-per-socket" / "2026-12-02-run0.log").read_text())
    shared = guest_topology((logs / "idle-victim-throttling" / "2026-12-02-run2.log").read_text())
    assert (per_socket.cpus, per_socket.sockets, per_socket.llc_groups, per_socket.sched_domains) == (8, 8, 8, "DIE")
    assert (shared.cpus, shared.sockets, shared.llc_groups, shared.sched_domains) == (8, 1, 1, "MC")
    assert guest_topology((logs / "idle-victim-throttling" / "2026-12-02-run0.log").read_text()) is None  # older /init

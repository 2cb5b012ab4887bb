"""exits_pending_max / exit_delay_max_s / exit_gap_max_s of kernel runs, on hand-written consoles.

The consoles below are written by hand in the format the harness records (see fixtures/*.log):
printk timestamps, the reproducer's "oomsweep:" lines and the OOM killer's lines. Times in the
comments are seconds after the "start" line (t0 = 10.0).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.calibrate.kernel_log import exit_gap_max, exit_waits, parse_run

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 10.0


def console(events: list[tuple[float, str]], preempt: str = "none voluntary (full)", children: int = 4,
            end: str | None = "done") -> str:
    """A boot's console: `events` are (seconds after start, message); pids 100.. are the children."""
    lines = ["@@oomsweep-boot 6.1.0-56-amd64 cpus=8", f"@@oomsweep-preempt {preempt}", "@@oomsweep-dmesg-begin"]
    body = [(T0, f"oomsweep: start run=0 children={children} horizon_s=30.000 lockup_after_s=20.000 "
                 "memory_max=104857600 watchdog_cpu=7")]
    body += [(T0, f"oomsweep: child child={i} group=children index={i} pid={100 + i}") for i in range(children)]
    body += [(T0 + t, m) for t, m in events]
    if end is not None:
        last = max(t for t, _ in events)
        body.append((T0 + last + 0.01, f"oomsweep: end run=0 reason={end} t={last + 0.01:.6f} max_stall_s=0.1 "
                                        "stalled=0 oom=9 oom_kill=9 ksoftirqd_cpu_s=0.010 oom_reaper_cpu_s=0.000"))
    lines += [f"[{t:12.6f}] {m}" for t, m in sorted(body, key=lambda e: e[0])]
    lines += ["@@oomsweep-dmesg-end"]
    return "\n".join(lines) + "\n"


def kill(pid: int) -> str:
    return (f"Memory cgroup out of memory: Killed process {pid} (oomrepro) total-vm:206468kB, anon-rss:102536kB, "
            "file-rss:0kB, shmem-rss:516kB, UID:0 pgtables:240kB oom_score_adj:1000")


def exit_(pid: int, t: float) -> str:
    return f"oomsweep: exit child={pid - 100} group=children pid={pid} t={t:.6f} sig=9 code=-1 cpu_s=0.1"


def progress(t: float) -> str:
    return f"oomsweep: progress t={t:.6f} current=360448 was=104857600"


def test_preempt_full_killed_children_wait_until_a_late_burst_of_exits():
    # 100 killed at 1.0, freed by 1.2 (the next kill: select_bad_process() aborts without MMF_OOM_SKIP);
    # 101 killed at 1.2, freed by 1.25 (progress); 102 killed at 1.4, freed by 1.45 (progress).
    # None exits before 5.0; 103 is killed at 5.3 and exits at 5.32 with no progress line before.
    r = parse_run(console([
        (0.9, "oomsweep: oom t=0.9 oom=1 oom_kill=0"), (1.0, kill(100)),
        (1.2, kill(101)), (1.25, progress(1.25)),
        (1.4, kill(102)), (1.45, progress(1.45)),
        (5.0, exit_(100, 5.0)), (5.001, exit_(101, 5.001)), (5.002, exit_(102, 5.002)),
        (5.3, kill(103)), (5.32, exit_(103, 5.32)),
    ]))
    o = r.outcome
    assert r.preempt == "full" and o["kills"] == 4
    assert o["exits_pending_max"] == 3  # 103 exits before anything shows its memory freed: it does not count
    assert o["exit_delay_max_s"] == pytest.approx(5.0 - 1.2)  # 100: next kill -> exit
    assert r.exit_gap_max_s == pytest.approx(5.0 - 1.0)  # first kill -> first exit


def test_a_progress_line_before_the_next_kill_bounds_the_freeing_tighter():
    r = parse_run(console([(1.0, kill(100)), (1.05, progress(1.05)), (1.5, kill(101)), (3.0, exit_(100, 3.0)),
                           (3.1, exit_(101, 3.1))]))
    assert r.outcome["exit_delay_max_s"] == pytest.approx(3.0 - 1.05)
    assert r.outcome["exits_pending_max"] == 1  # 101's memory is never shown freed before its exit


def test_a_reap_marks_the_memory_freed():
    # A starved victim reaped after the reaper's 2 s, exiting half a second later.
    r = parse_run(console([(1.0, kill(100)), (3.01, "oom_reaper: reaped process 100 (oomrepro), now anon-rss:0kB, "
                                                    "file-rss:0kB, shmem-rss:0kB"), (3.51, exit_(100, 3.51))],
                          preempt="none (voluntary) full"))
    assert r.preempt == "voluntary"
    assert r.outcome["exits_pending_max"] == 1
    assert r.outcome["exit_delay_max_s"] == pytest.approx(0.5)


def test_victims_that_exit_right_after_the_kill_do_not_wait():
    # voluntary preemption: each victim exits 15 ms after its kill, before anything else is logged
    ev = []
    for i in range(4):
        ev += [(1.0 + i * 0.2, kill(100 + i)), (1.015 + i * 0.2, exit_(100 + i, 1.015 + i * 0.2))]
    r = parse_run(console(ev, preempt="none (voluntary) full"))
    assert r.outcome["kills"] == 4
    assert r.outcome["exits_pending_max"] == 0 and r.outcome["exit_delay_max_s"] == 0.0
    assert r.exit_gap_max_s == pytest.approx(0.2 - 0.015 + 0.015)  # exit i -> exit i+1


def test_a_stall_ends_the_waits_and_exits_after_it_do_not_count():
    # 100 freed (next kill at 2.0) but never exits before the watchdog declares a stall at 22.0;
    # 101, the newest victim, never shows freed memory: not counted. The watchdog then kills both.
    r = parse_run(console([
        (1.0, kill(100)), (2.0, kill(101)), (2.1, "oomsweep: oom t=2.1 oom=3 oom_kill=2"),
        (22.0, "oomsweep: stall t=22.000000 since=2.100000 last_progress=2.000000 oom=900 oom_kill=2"),
        (23.0, exit_(100, 23.0)), (23.01, exit_(101, 23.01)),
    ], end="stall"))
    o = r.outcome
    assert o["lockup"] and o["victims_pending_at_end"] == 2
    assert o["exits_pending_max"] == 1
    assert o["exit_delay_max_s"] == pytest.approx(22.0 - 2.0)
    assert r.exit_gap_max_s == pytest.approx(22.0 - 1.0)  # no victim exit from the first kill to the stall


def test_kills_of_other_processes_are_not_victims_here():
    r = parse_run(console([(1.0, kill(999)), (1.2, kill(100)), (1.3, progress(1.3)), (2.0, exit_(100, 2.0))]))
    assert r.outcome["kills"] == 1
    assert r.outcome["exits_pending_max"] == 1 and r.outcome["exit_delay_max_s"] == pytest.approx(0.7)


def test_exit_waits_directly():
    kills = [(1.0, 1), (2.0, 2), (3.0, 3)]
    exits = {1: 4.0, 2: 4.0, 3: 3.5}
    pmax, dmax, freed = exit_waits(kills, exits, {}, [], t_cut=10.0)
    assert freed == {1: 2.0, 2: 3.0, 3: 3.5}
    assert pmax == 2 and dmax == pytest.approx(2.0)
    # an exit and a freeing at the same instant: the exit first, so never 2 at once
    pmax, _, _ = exit_waits([(1.0, 1), (2.0, 2), (3.0, 3)], {1: 3.0, 2: 5.0}, {}, [], t_cut=10.0)
    assert pmax == 1
    assert exit_gap_max(None, [], 10.0, open_end=True) == 0.0
    assert exit_gap_max(1.0, [2.0, 5.0], 10.0, open_end=False) == pytest.approx(3.0)
    assert exit_gap_max(1.0, [2.0, 5.0], 10.0, open_end=True) == pytest.approx(5.0)


def test_handa_variant_fixture_fifo_children_wait_for_the_last_fifo_kill():
    # Real boot (preempt=full, 8 vCPUs, TCG): the 32 FIFO children were killed one after another
    # from 0.98 s and all exited within 40 ms once the last FIFO child (killed at 5.54 s) was gone.
    r = parse_run((FIXTURES / "handa-variant.log").read_text(), ("children_idle", "children_fifo"))
    o = r.outcome
    assert r.preempt == "full"
    assert o["exits_pending_max"] == 31  # the 32nd FIFO victim exited before anything showed its memory freed
    assert 4.0 < o["exit_delay_max_s"] < 5.0
    assert r.exit_gap_max_s == pytest.approx(o["exit_delay_max_s"] + 0.12, abs=0.1)


def test_idle_victim_lockup_fixture_never_shows_freed_memory():
    r = parse_run((FIXTURES / "idle-victim-lockup.log").read_text())
    assert r.preempt == "voluntary"
    assert r.outcome["exits_pending_max"] == 0 and r.outcome["exit_delay_max_s"] == 0.0
    assert r.exit_gap_max_s == pytest.approx(20.0, abs=0.05)  # kill -> the watchdog's stall

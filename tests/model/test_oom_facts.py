"""Kernel facts about the OOM path that the model must reproduce (reference sections 1-3)."""

from __future__ import annotations

import copy

import pytest

from oommodel import POLICIES, PolicyError, Scenario, simulate

ONE_APP = {
    "horizon_s": 10,
    "lockup_after_s": 5,
    "machine": {"cpus": 2, "hz": 1000},
    "oom": {"domain": "memcg", "limit_mb": 100},
    "groups": [{"name": "app", "count": 1, "role": "allocator", "rss_mb": 200,
                "sched": {"policy": "normal", "nice": 0}, "cpus": [0]}],
}


def scenario(**patch) -> Scenario:
    d = copy.deepcopy(ONE_APP)
    for key, value in patch.items():
        d[key] = value
    return Scenario.from_dict(d)


def test_reaper_gives_up_after_ten_failed_trylocks_about_one_second_after_the_kill():
    # The victim holds mmap_sem for write for 5 s of CPU work (e.g. inside munlock).
    sc = scenario(mmap_sem={"writer_at_kill_p": 1.0, "writer_hold_ms": 5000})
    out = simulate(sc, "upstream_4_19", seed=1)
    assert out.kills == 1
    assert out.reaper_attempts == 10                        # MAX_OOM_REAP_RETRIES
    assert out.oom_skip_by == "reaper"
    assert out.first_skip_s - out.first_kill_s == pytest.approx(1.0, abs=0.01)   # 10 x HZ/10


def test_reaper_sets_skip_right_after_one_successful_reap():
    out = simulate(scenario(), "upstream_4_19", seed=1)
    assert out.reaper_attempts == 1
    # the reaper reaps 100 MB at 34 ms/GB while the victim does the same in exit_mmap
    assert 0.0 < out.first_skip_s - out.first_kill_s < 0.01
    assert not out.lockup


def test_upstream_6_1_reaper_waits_two_seconds_and_exit_path_wins():
    out = simulate(scenario(), "upstream_6_1", seed=1)
    assert out.oom_skip_by == "exit"                        # set right after unmap_vmas
    assert out.reaper_attempts == 0                         # timer fired after MMF_OOM_SKIP: nothing to do


def test_upstream_6_1_reaps_a_starved_victim_after_oom_reaper_delay():
    # A SCHED_IDLE victim holding memory, a FIFO allocator spinning on its CPU, no throttling
    # (real-kernel-6.1.md section 3: reaped 2.003-2.042 s after the kill).
    sc = Scenario.from_yaml("configs/scenarios/idle-victim-no-throttling.yaml")
    out = simulate(sc, "upstream_6_1", seed=3)
    assert out.oom_skip_by == "reaper"
    assert out.first_skip_s - out.first_kill_s == pytest.approx(2.0, abs=0.05)
    assert not out.lockup


def test_starved_ksoftirqd_keeps_the_reaper_timer_from_firing():
    d = Scenario.from_yaml("configs/scenarios/idle-victim-no-throttling.yaml").to_dict()
    d["machine"]["softirq"] = "ksoftirqd_defer"
    d["machine"]["ksoftirqd_awake_p"] = 1.0
    out = simulate(Scenario.from_dict(d), "upstream_6_1", seed=3)
    assert out.lockup
    assert out.lockup_reason == "reaper_timer_stuck" and "ksoftirqd" in out.lockup_detail
    assert out.oom_skip_by == "none"


def test_rt_throttling_lets_a_starved_idle_victim_exit():
    d = Scenario.from_yaml("configs/scenarios/idle-victim-no-throttling.yaml").to_dict()
    d["machine"]["rt_runtime_us"] = 950000
    d["machine"]["rt_runtime_share"] = False
    out = simulate(Scenario.from_dict(d), "upstream_6_1", seed=3)
    assert out.oom_skip_by == "exit"                        # the victim ran in a 50 ms window
    assert out.first_skip_s % 1.0 >= 0.95                   # ... at the end of an RT period
    assert 0.4 < out.first_skip_s - out.first_kill_s < 1.7  # 0.61-1.63 s measured on 6.1
    assert not out.lockup


def test_handoff_locks_up_when_the_victim_is_starved_after_handover():
    d = Scenario.from_yaml("configs/scenarios/handa-2018-11-14.yaml").to_dict()
    d["reaper"]["busy_elsewhere_p"] = 1.0                   # the reaper arrives after the handover point
    sc = Scenario.from_dict(d)
    b = simulate(sc, "handoff_rfc_v2", seed=5)
    assert b.handed_over and b.lockup
    assert b.lockup_reason == "victim_starved_after_handover" and b.lockup_detail
    assert b.max_stall_s > 90
    a = simulate(sc, "upstream_4_19", seed=5)
    assert not a.lockup
    c = simulate(sc, "handoff_oom_lock", seed=5)            # allocators sleep on oom_lock instead
    assert not c.lockup


def test_timeout_backoff_bounds_the_stall_by_its_timeout():
    d = Scenario.from_yaml("configs/scenarios/handa-2018-11-14.yaml").to_dict()
    sc = Scenario.from_dict(d)
    short = simulate(sc, "timeout_backoff", seed=2, timeout_s=0.5)
    long = simulate(sc, "timeout_backoff", seed=2, timeout_s=2.0)
    assert short.max_stall_s < long.max_stall_s <= 2.1


def test_policy_options_are_checked():
    with pytest.raises(PolicyError, match="timeout_s"):
        simulate(scenario(), "timeout_backoff", seed=1, timeout_s=-1)
    with pytest.raises(PolicyError, match="unknown option"):
        simulate(scenario(), "upstream_4_19", seed=1, timeout_s=1.0)
    with pytest.raises(PolicyError, match="did you mean 'handoff_rfc_v2'"):
        simulate(scenario(), "handoff_rfc_v3", seed=1)


def test_every_policy_is_registered_with_description_and_references():
    assert set(POLICIES) == {"upstream_4_19", "handoff_rfc_v2", "handoff_oom_lock", "timeout_backoff",
                             "stall_backoff", "direct_reap", "upstream_5_10", "upstream_6_1"}
    for p in POLICIES.values():
        assert p.description and "\n" not in p.description
        assert p.references and p.kernel_base


def test_direct_reaping_frees_the_starved_victim_at_once():
    # The FIFO allocator reaps the SCHED_IDLE victim itself; the memory it freed inside
    # out_of_memory() must not be missed while it goes back to retrying (no lost wakeup).
    sc = Scenario.from_yaml("configs/scenarios/idle-victim-no-throttling.yaml")
    out = simulate(sc, "direct_reap", seed=3)
    assert out.oom_skip_by == "direct"
    assert out.max_stall_s < 0.1

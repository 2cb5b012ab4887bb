"""Determinism, common random numbers, event cost and invariants of `simulate`."""

from __future__ import annotations

import dataclasses
import multiprocessing

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from oommodel import POLICIES, Scenario, simulate
from oommodel.kernel.mm import MMF
from oommodel.kernel.world import World
from oommodel.outcome import SkipBy
from oommodel.policies.base import Op, ReaperKind

HANDA = "configs/scenarios/handa-2018-11-14.yaml"


def _run_in_child(args):
    path, policy, seed = args
    return dataclasses.asdict(simulate(Scenario.from_yaml(path), policy, seed))


@pytest.mark.slow
def test_same_arguments_same_outcome_in_this_and_another_process():
    sc = Scenario.from_yaml(HANDA)
    here = [dataclasses.asdict(simulate(sc, p, 11)) for p in ("handoff_rfc_v2", "upstream_6_1")]
    again = [dataclasses.asdict(simulate(sc, p, 11)) for p in ("handoff_rfc_v2", "upstream_6_1")]
    assert here == again
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        there = pool.map(_run_in_child, [(HANDA, "handoff_rfc_v2", 11), (HANDA, "upstream_6_1", 11)])
    assert here == there


def test_different_seeds_draw_different_start_times():
    sc = Scenario.from_yaml(HANDA)
    a = [p.start_s for p in World(sc, POLICIES["upstream_4_19"], {}, 1).state.procs]
    b = [p.start_s for p in World(sc, POLICIES["upstream_4_19"], {}, 2).state.procs]
    assert a != b


def test_every_policy_meets_the_same_draws_with_one_seed():
    sc = Scenario.from_yaml(HANDA)
    seen = set()
    for name, pol in POLICIES.items():
        opts = pol.check_options({})
        w = World(sc, pol, opts, 7)
        seen.add((tuple((p.pid, p.start_s, p.mm.frac_anon) for p in w.state.procs),
                  tuple(p.pid for p in w.state.scan_order), w.state.costs))
    assert len(seen) == 1


def test_a_persistent_lockup_costs_no_more_events_for_ten_times_the_horizon():
    d = Scenario.from_yaml(HANDA).to_dict()
    d["reaper"]["busy_elsewhere_p"] = 1.0
    d["horizon_s"] = 120
    short = simulate(Scenario.from_dict(d), "handoff_rfc_v2", 5)
    d["horizon_s"] = 1200
    long = simulate(Scenario.from_dict(d), "handoff_rfc_v2", 5)
    assert short.lockup and long.lockup
    assert long.max_stall_s > 1000
    assert long.sim_events < 1.5 * short.sim_events


def test_the_derived_handover_lockup_costs_the_same_events_at_3000_s_as_at_60_s():
    # Issue 13's "Keep": with defaults only (no injected reaper delay), seed 3 of Handa's file hands
    # over and starves the victim; a 50x longer horizon must not add a single event.
    d = Scenario.from_yaml(HANDA).to_dict()
    d["horizon_s"] = 60
    short = simulate(Scenario.from_dict(d), "handoff_rfc_v2", 3)
    d["horizon_s"] = 3000
    long = simulate(Scenario.from_dict(d), "handoff_rfc_v2", 3)
    assert short.lockup and long.lockup and short.lockup_reason == "victim_starved_after_handover"
    assert long.max_stall_s > 2900
    assert long.sim_events == short.sim_events


# -- invariants over random valid scenarios ---------------------------------------------

def scenarios() -> st.SearchStrategy[dict]:
    sched = st.one_of(
        st.builds(lambda p, r: {"policy": p, "rt_priority": r}, st.sampled_from(["fifo", "rr"]), st.integers(1, 99)),
        st.builds(lambda p, n: {"policy": p, "nice": n}, st.sampled_from(["normal", "batch"]), st.integers(-20, 19)),
        st.just({"policy": "idle"}),
    )

    @st.composite
    def build(draw):
        cpus = draw(st.integers(1, 4))
        affinity = st.one_of(st.none(), st.lists(st.integers(0, cpus - 1), min_size=1, max_size=cpus, unique=True))
        groups = []
        for i in range(draw(st.integers(1, 3))):
            groups.append({
                "name": f"g{i}", "count": draw(st.integers(1, 4)),
                "role": draw(st.sampled_from(["allocator", "allocator", "hog", "sleeper"])),
                "threads_per_process": draw(st.integers(1, 2)),
                "sched": draw(sched), "cpus": draw(affinity),
                "rss_mb": draw(st.floats(0, 150)), "oom_score_adj": draw(st.integers(-1000, 1000)),
                "start_s": draw(st.one_of(st.floats(0, 0.5), st.just({"uniform": [0.0, 0.2]}))),
            })
        anon = draw(st.floats(0, 1))
        return {
            "horizon_s": draw(st.floats(0.5, 8)), "lockup_after_s": draw(st.floats(0.2, 3)),
            "machine": {"cpus": cpus, "hz": draw(st.sampled_from([100, 250, 300, 1000])),
                        "preempt": draw(st.sampled_from(["none", "voluntary", "full"])),
                        "rt_runtime_us": draw(st.sampled_from([-1, 950000, 500000])),
                        "rt_runtime_share": draw(st.booleans()),
                        "softirq": draw(st.sampled_from(["inline", "ksoftirqd_defer"])),
                        "ksoftirqd_awake_p": draw(st.sampled_from([None, None, 0.0, 0.5, 1.0])),
                        "ksoftirqd_wake_hz": draw(st.sampled_from([0.0, 0.34, 20.0])),
                        "topology": draw(st.sampled_from(["shared_llc", "core_per_socket"]))},
            "oom": draw(st.one_of(st.none(), st.builds(lambda d, l: {"domain": d, "limit_mb": l},
                                                       st.sampled_from(["memcg", "global"]), st.floats(20, 300)))),
            "groups": groups,
            "victim": {"memory": {"anon": anon, "mlocked": (1 - anon) / 2, "shared_file": (1 - anon) / 2},
                       "sched_at_handover": draw(st.sampled_from(["unchanged", "idle", "normal19", "fifo10"]))},
            "costs": {"close_blocks_on_memory_p": draw(st.sampled_from([0.0, 0.5])),
                      "alloc_loop_us": draw(st.floats(20, 500))},
            "reaper": {"busy_elsewhere_p": draw(st.sampled_from([0.0, 0.5])), "busy_elsewhere_s": 0.3,
                       "last_cpu": draw(st.one_of(st.just("any"), st.integers(0, cpus - 1)))},
            "mmap_sem": {"writer_at_kill_p": draw(st.sampled_from([0.0, 0.5])), "writer_hold_ms": 300},
        }
    return build()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=scenarios(), policy=st.sampled_from(sorted(POLICIES)), seed=st.integers(0, 2**32))
def test_invariants_hold_on_random_scenarios(d, policy, seed):
    sc = Scenario.from_dict(d)
    pol = POLICIES[policy]
    world = World(sc, pol, pol.check_options({}), seed, trace=True)
    out = world.run()
    machine = world.state.machine
    machine.flush_trace()
    machine.check_invariants()
    allowed = {th.name: set(th.allowed) for th in machine.threads}
    by_thread: dict[str, list[tuple[float, float, int]]] = {}
    for name, cpu, t0, t1, rate in machine.trace:
        assert cpu in allowed[name], f"{name} ran on CPU {cpu} outside its affinity"
        assert 0.0 < rate <= 1.0 + 1e-9
        by_thread.setdefault(name, []).append((t0, t1, cpu))
    for name, segs in by_thread.items():
        segs.sort()
        for (a0, a1, ca), (b0, b1, cb) in zip(segs, segs[1:]):
            assert b0 >= a1 - 1e-9 or ca == cb, f"{name} on two CPUs at once"
    # CPU time handed out never exceeds wall time: per CPU, and per thread (one CPU at a time)
    per_cpu: dict[int, float] = {}
    for _name, cpu, t0, t1, rate in machine.trace:
        per_cpu[cpu] = per_cpu.get(cpu, 0.0) + rate * (t1 - t0)
    for cpu, used in per_cpu.items():
        assert used <= out.sim_time_s + 1e-6, f"CPU {cpu} handed out {used} s in {out.sim_time_s} s"
    for th in machine.threads:
        assert machine.cpu_time(th) <= out.sim_time_s + 1e-6, f"{th.name} ran on two CPUs at once"
    assert sum(per_cpu.values()) == pytest.approx(sum(machine.cpu_time(th) for th in machine.threads),
                                                  rel=1e-9, abs=1e-9)  # the trace accounts for all of it
    state = world.state
    victims = state.victims
    assert out.lockup == (out.max_stall_s >= sc.lockup_after_s)
    assert out.kills == len(victims) >= out.extra_kills
    # memory: what the victims freed is what they had mapped (RSS + page tables) minus what is left
    mapped = sum(v.mm.mapped_mb * (v.mm.frac_anon + v.mm.frac_mlocked + v.mm.frac_file)
                 + v.mm.mapped_mb * v.mm.pgtable_per_mb for v in victims)
    left = sum(v.mm.rss_mb + v.mm.pgtable_mb + v.mm.gathered_mb for v in victims)   # gathered: unmapped, not freed
    assert out.memory_freed_mb == pytest.approx(mapped - left, rel=1e-9, abs=1e-6)
    # MMF_OOM_SKIP: set on the logged victim, after its kill, in time order, by a setter the policy has
    setters = {SkipBy.EXIT} if any(step.op is Op.SET_SKIP for step in state.cfg.exit_steps) else set()
    if pol.reaper in (ReaperKind.UNCONDITIONAL, ReaperKind.HANDOVER):
        setters.add(SkipBy.REAPER)
    if pol.reaper is ReaperKind.DEADLINE or pol.victim_list_backoff:
        setters.add(SkipBy.TIMEOUT)
    if pol.direct_reap:
        setters.add(SkipBy.DIRECT)
    by_pid = {v.pid: v for v in victims}
    times = [rec.time for rec in state.skip_log]
    assert times == sorted(times)
    for rec in state.skip_log:
        v = by_pid[rec.pid]
        assert v.mm.has(MMF.MMF_OOM_SKIP) and v.kill_time is not None and rec.time >= v.kill_time
        assert rec.by in setters, f"{policy}: MMF_OOM_SKIP set by {rec.by} on {v.name}"
    first = [rec for rec in state.skip_log if victims and rec.pid == victims[0].pid]
    assert out.oom_skip_by == (first[0].by.value if first else "none")
    assert out.first_skip_s == (first[0].time if first else None)
    assert out.victims_pending_at_end == sum(1 for v in victims if v.released_by is None)
    # exits: a process exits only after __mmput() freed its memory; the waiting count is bounded
    assert 0 <= out.exits_pending_max <= out.kills
    assert 0.0 <= out.exit_delay_max_s <= out.sim_time_s
    for v in victims:
        assert v.exit_time is None or (v.mmput_time is not None and v.mmput_time <= v.exit_time)

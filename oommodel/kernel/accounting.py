"""What a run counts while it runs (into `state.stats`), and the `Outcome` built from it at the end.

The kernel code reports events here (`note_*`, `free_memory`); nothing here changes what is
simulated except `free_memory`, which also uncharges the OOM domain as freeing pages does.
The counters themselves are plain data in state.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.outcome import Outcome

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process


def note_handover(state: RunState, victim: Process) -> None:
    """The reaper left MMF_OOM_SKIP to the exit path (RFC v2's handover)."""
    victim.handed_over = True
    victim.handover_time = state.env.now
    state.stats.handovers += 1


def note_mmput(state: RunState, proc: Process) -> None:
    """__mmput() returned: the process's memory is freed, its exit still to finish."""
    proc.mmput_time = state.env.now
    if proc.killed:
        _note_exits_pending(state, +1)


def note_thread_exit(state: RunState, proc: Process) -> None:
    """A thread reached do_task_dead(); the process has exited with its last thread."""
    if proc.exit_time is not None or not all(t.exited for t in proc.threads):
        return
    proc.exit_time = state.env.now
    if proc.killed and proc.mmput_time is not None:
        _note_exits_pending(state, -1)
        st = state.stats
        st.exit_delay_max_s = max(st.exit_delay_max_s, proc.exit_time - proc.mmput_time)


def _note_exits_pending(state: RunState, delta: int) -> None:
    """Change the count of freed-but-not-exited victims; a count held for no time is not a wait.

    A victim whose exit follows its `__mmput()` in the same instant never waited, whatever
    order the two events had in that instant (the kernel log's reading: sweeps/kernel_log.py).
    """
    st = state.stats
    now = state.env.now
    if now > st.exits_pending_since:
        st.exits_pending_max = max(st.exits_pending_max, st.exits_pending)
        st.exits_pending_since = now
    st.exits_pending += delta


def note_alloc_after_wait(state: RunState) -> None:
    """An allocator that waited got memory: the first one after the first kill is "progress"."""
    st = state.stats
    if st.first_progress_s is None and st.first_kill_s is not None:
        st.first_progress_s = state.env.now


def free_memory(state: RunState, proc: Process, mb: float) -> None:
    """Pages of proc freed: uncharged from the OOM domain, counted when proc is an OOM victim."""
    if mb <= 0.0:
        return
    if proc.oom_victim:
        state.stats.memory_freed_mb += mb
    state.recycled_mb += mb  # reused first by later faults (costs.first_touch_ms_per_mb)
    if state.domain is not None:
        state.domain.uncharge(mb)


def free_pgtables(state: RunState, proc: Process, mb: float) -> None:
    """Page-table pages freed (counted for a victim; not charged to the memcg in this model)."""
    if proc.oom_victim:
        state.stats.memory_freed_mb += mb


def build_outcome(state: RunState, group_names: list[str]) -> Outcome:
    """The Outcome of a finished run (the detector has been finished)."""
    env = state.env
    st = state.stats
    machine = state.machine
    cpu = {name: 0.0 for name in group_names}
    cpu.update({"oom_reaper": 0.0, "victim": 0.0, "ksoftirqd": 0.0})
    for group, seconds in machine.cpu_time_by_group().items():
        cpu[group] = cpu.get(group, 0.0) + seconds
    victim_cpu = 0.0
    for v in state.victims:
        for t in v.threads:
            victim_cpu += machine.cpu_time(t) - v.cpu_at_kill.get(t.tid, 0.0)
    cpu["victim"] = victim_cpu
    _note_exits_pending(state, 0)  # victims still waiting at the end count up to now
    exit_delay_max_s = st.exit_delay_max_s
    for v in state.victims:                         # still waiting at the end of the run
        if v.mmput_time is not None and v.exit_time is None:
            exit_delay_max_s = max(exit_delay_max_s, env.now - v.mmput_time)
    det = state.detector
    return Outcome(
        lockup=det.lockup,
        lockup_reason=det.reason.value if det.lockup and det.reason is not None else "",
        lockup_detail=det.detail if det.lockup else "",
        max_stall_s=det.max_stall_s,
        first_progress_s=st.first_progress_s,
        first_kill_s=st.first_kill_s,
        first_skip_s=st.first_skip_s,
        kills=st.kills,
        extra_kills=st.extra_kills,
        handed_over=st.handovers > 0,
        handovers=st.handovers,
        oom_skip_by=st.first_skip_by.value if st.first_skip_by is not None else "none",
        released_by=st.first_released_by.value if st.first_released_by is not None else "none",
        reaper_attempts=st.reaper_attempts,
        memory_freed_mb=st.memory_freed_mb,
        panic=st.panic,
        victims_pending_at_end=sum(1 for v in state.victims if v.released_by is None),
        oom_calls=st.oom_calls,
        sim_time_s=env.now,
        sim_events=env.processed,  # type: ignore[attr-defined]
        exits_pending_max=st.exits_pending_max,
        exit_delay_max_s=exit_delay_max_s,
        cpu_s=cpu,
    )

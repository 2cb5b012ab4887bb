"""An OOM victim's end: `set_bit(MMF_OOM_SKIP, &mm->flags)` and leaving the OOM killer's view.

The kernel sets MMF_OOM_SKIP in mm/oom_kill.c:oom_reap_task() (the reaper, v4.19) and in
mm/mmap.c:exit_mmap() (the exit path); the policies add a timeout (Rientjes v3, Handa's
`stall_s`) and direct reaping (Handa 3/8). Under Handa's victim list (policies d2, e) the flag
no longer lets the OOM killer move on: the victim leaves `oom_victim_list` in exit_oom_mm()
at the end of __mmput() or when its score stalls. This module is below oom_kill.py,
oom_reaper.py and exit.py, which all call it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.kernel.state import SkipRecord
from oommodel.kernel.mm import MMF
from oommodel.outcome import SkipBy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process


def set_mmf_oom_skip(state: RunState, victim: Process, by: SkipBy) -> None:
    """set_bit(MMF_OOM_SKIP): at most once per mm; on a victim, logged and (v4.19) releases it."""
    mm = victim.mm
    if mm.has(MMF.MMF_OOM_SKIP):
        return
    mm.flags |= MMF.MMF_OOM_SKIP
    if not victim.oom_victim:
        return
    now = state.env.now
    state.skip_log.append(SkipRecord(victim.pid, by, now))
    st = state.stats
    if st.first_skip_by is None and victim is state.victims[0]:
        st.first_skip_by = by
        st.first_skip_s = now
    state.detector.progress()
    if not state.policy.victim_list_backoff:
        release_victim(state, victim, by)
    elif state.domain is not None:
        state.domain.notify()


def release_victim(state: RunState, victim: Process, by: SkipBy) -> None:
    """The OOM killer may now look past this victim (Handa's exit_oom_mm(); implicit in v4.19)."""
    victim.in_victim_list = False
    if victim.released_by is None:
        victim.released_by = by
        if victim is state.victims[0]:
            state.stats.first_released_by = by
    state.detector.progress()
    if state.domain is not None:
        state.domain.notify()

"""Per-run costs in seconds, drawn once per run from named streams.

Only `unmap_ms_per_gb` has a published source (Aaron Lu, ~34 ms/GB, reference section 3);
every other cost is a scenario parameter, possibly a distribution (reference section 5.1–5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from oommodel.streams import Streams

MB_PER_GB = 1024.0

# Kernel constants (reference section 3).
MAX_RECLAIM_RETRIES = 16          # mm/page_alloc.c, v4.19
MEM_CGROUP_RECLAIM_RETRIES = 5    # mm/memcontrol.c, v4.19
ZAP_RESCHED_S = 64e-6             # cond_resched() per pmd in zap_pmd_range(): 512 pages at ~0.13 us/page
UNLINK_VMAS_S = 10e-6             # __unlink_vmas / unlink_file_vma for a small process
DO_EXIT_TAIL_S = 5e-6             # do_exit() after a preemption in sched_move_task(): cgroup_exit() .. do_task_dead()
MIN_TOUCH_CHUNK_MB = 1.0          # smallest slice of memory faulted in between two charge checks


@dataclass(frozen=True, slots=True)
class RunCosts:
    touch_s_per_mb: float
    unmap_s_per_mb: float
    free_pgtables_s_per_mb: float
    alloc_loop_s: float
    exit_s: float
    oom_kill_s: float
    pgtable_mb_per_gb: float

    @classmethod
    def draw(cls, costs, victim, streams: Streams) -> RunCosts:
        def d(value, key: str) -> float:
            return float(streams.draw(value, "costs", key))

        return cls(
            touch_s_per_mb=d(costs.touch_ms_per_mb, "touch_ms_per_mb") / 1e3,
            unmap_s_per_mb=d(costs.unmap_ms_per_gb, "unmap_ms_per_gb") / 1e3 / MB_PER_GB,
            free_pgtables_s_per_mb=d(costs.free_pgtables_ms_per_gb, "free_pgtables_ms_per_gb") / 1e3 / MB_PER_GB,
            alloc_loop_s=max(1e-7, d(costs.alloc_loop_us, "alloc_loop_us") / 1e6),
            exit_s=d(costs.exit_ms, "exit_ms") / 1e3,
            oom_kill_s=d(costs.oom_kill_us, "oom_kill_us") / 1e6,
            pgtable_mb_per_gb=float(streams.draw(victim.pgtable_mb_per_gb, "victim", "pgtable_mb_per_gb")),
        )

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
REAPER_WAKE_S = 5e-6             # oom_reaper back on a CPU: schedule() returns, oom_reaper_list pop, oom_reap_task() entry
# mm/mmu_gather.c + include/asm-generic/tlb.h (v4.19 .. v6.1): an mmu_gather holds the pages it
# unmapped, unfreed and still charged, in its on-stack bundle (MMU_GATHER_BUNDLE = 8 pages) and at
# most MAX_GATHER_BATCH_COUNT = 10000 / MAX_GATHER_BATCH batches of MAX_GATHER_BATCH = (4096 - 16) / 8
# = 510 pages; when they are full zap_pte_range() flushes (frees) them all, and tlb_finish_mmu()
# frees the rest. 8 + 19 * 510 = 9698 pages.
MMU_GATHER_MAX_MB = (8 + (10000 // 510) * 510) * 4.0 / 1024.0
MIN_TOUCH_CHUNK_MB = 1.0          # smallest slice of memory faulted in between two charge checks
TOUCH_PROBE_S = 1e-6              # CPU a faulting thread runs before it prices a slice (first_touch_ms_per_mb set)


@dataclass(frozen=True, slots=True)
class RunCosts:
    touch_s_per_mb: float
    first_touch_s_per_mb: float   # memory never handed out before in the run (= touch_s_per_mb if unset)
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

        touch = d(costs.touch_ms_per_mb, "touch_ms_per_mb") / 1e3
        first = costs.first_touch_ms_per_mb
        return cls(
            touch_s_per_mb=touch,
            first_touch_s_per_mb=touch if first is None else d(first, "first_touch_ms_per_mb") / 1e3,
            unmap_s_per_mb=d(costs.unmap_ms_per_gb, "unmap_ms_per_gb") / 1e3 / MB_PER_GB,
            free_pgtables_s_per_mb=d(costs.free_pgtables_ms_per_gb, "free_pgtables_ms_per_gb") / 1e3 / MB_PER_GB,
            alloc_loop_s=max(1e-7, d(costs.alloc_loop_us, "alloc_loop_us") / 1e6),
            exit_s=d(costs.exit_ms, "exit_ms") / 1e3,
            oom_kill_s=d(costs.oom_kill_us, "oom_kill_us") / 1e6,
            pgtable_mb_per_gb=float(streams.draw(victim.pgtable_mb_per_gb, "victim", "pgtable_mb_per_gb")),
        )

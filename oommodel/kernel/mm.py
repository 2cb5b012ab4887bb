"""The victim's address space: what is mapped, what is freed, and the `mm->flags` bits.

Models the parts of `struct mm_struct` (include/linux/mm_types.h, v4.19) that the OOM path
reads: the RSS counters by kind of memory, page-table pages, `mm->mmap` (NULL once the
exit path has unlinked every vma: the "handover point" of RFC v2) and `mm->flags`.
"""

from __future__ import annotations

import simpy

from oommodel.kernel.locks import RwSem


class MMF:
    """`mm->flags` bits used by mm/oom_kill.c (include/linux/sched/coredump.h, v4.19).

    Plain ints, not an IntFlag: `mm.has()` runs in every select_bad_process() scan.
    """

    MMF_OOM_VICTIM = 1
    MMF_UNSTABLE = 2
    MMF_OOM_SKIP = 4


class Mm:
    """One process's memory, in MB, split as the reaper sees it.

    `anon_mb` can be reaped (mm/oom_kill.c:__oom_reap_task_mm); `mlocked_mb` only from v6.1
    on; `file_mb` (shared file mappings) and `pgtable_mb` only by the exit path.
    """

    __slots__ = (
        "pid", "anon_mb", "mlocked_mb", "file_mb", "pgtable_mb", "mapped_mb", "flags",
        "mmap_cleared", "users", "mmap_sem", "reap_start_mb", "pgtable_per_mb",
        "frac_anon", "frac_mlocked", "frac_file", "zap", "gathered_mb",
    )

    def __init__(self, env: simpy.Environment, pid: int, users: int,
                 fractions: tuple[float, float, float], pgtable_mb_per_gb: float) -> None:
        self.pid = pid
        self.anon_mb = 0.0
        self.mlocked_mb = 0.0
        self.file_mb = 0.0
        self.pgtable_mb = 0.0
        self.mapped_mb = 0.0
        self.flags = 0
        self.mmap_cleared = False
        self.users = users
        self.mmap_sem = RwSem(env)
        self.reap_start_mb: float | None = None
        self.frac_anon, self.frac_mlocked, self.frac_file = fractions
        self.pgtable_per_mb = pgtable_mb_per_gb / 1024.0
        self.zap: tuple | None = None      # exit path's unmap_vmas() in progress: (thread, cpu0, work_s, mb0)
        self.gathered_mb = 0.0             # unmapped by the exit path, held in its mmu_gather: still charged

    def touch(self, mb: float) -> None:
        """Map `mb` of newly faulted memory (and the page tables it needs)."""
        self.anon_mb += mb * self.frac_anon
        self.mlocked_mb += mb * self.frac_mlocked
        self.file_mb += mb * self.frac_file
        self.mapped_mb += mb
        self.pgtable_mb += mb * self.pgtable_per_mb

    @property
    def rss_mb(self) -> float:
        return self.anon_mb + self.mlocked_mb + self.file_mb

    def badness_mb(self) -> float:
        """`oom_badness()` before the `oom_score_adj` term: rss + swap (none) + page tables."""
        return self.rss_mb + self.pgtable_mb

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def reapable_mb(self, reap_mlocked: bool) -> float:
        """What `__oom_reap_task_mm` can unmap: private anon, plus mlocked vmas from v6.1."""
        return self.anon_mb + (self.mlocked_mb if reap_mlocked else 0.0)

    def reap(self, reap_mlocked: bool) -> float:
        """Unmap what the reaper can; returns MB freed."""
        freed = self.anon_mb
        self.anon_mb = 0.0
        if reap_mlocked:
            freed += self.mlocked_mb
            self.mlocked_mb = 0.0
        return freed

    def zap_down_to(self, remaining_mb: float) -> float:
        """unmap_vmas() seen part way: at most `remaining_mb` of mapped pages are left; pages already
        gone (reaped) count as zapped. Kinds go in proportion. Returns MB freed now."""
        rss = self.rss_mb
        if rss <= remaining_mb or rss <= 0.0:
            return 0.0
        keep = max(0.0, remaining_mb) / rss
        self.anon_mb *= keep
        self.mlocked_mb *= keep
        self.file_mb *= keep
        return rss - self.rss_mb

    def take_reapable(self, mb: float, reap_mlocked: bool) -> float:
        """The reaper's share of a zap shared with unmap_vmas(): `mb` of the reapable pages leave
        the RSS counters now (kinds in proportion); returns MB taken."""
        have = self.reapable_mb(reap_mlocked)
        if have <= 0.0 or mb <= 0.0:
            return 0.0
        keep = max(0.0, have - mb) / have
        taken = self.anon_mb * (1.0 - keep)
        self.anon_mb *= keep
        if reap_mlocked:
            taken += self.mlocked_mb * (1.0 - keep)
            self.mlocked_mb *= keep
        return taken

    def unmap_all(self) -> float:
        """`unmap_vmas()` over every vma: all mapped pages go; returns MB freed."""
        freed = self.rss_mb
        self.anon_mb = self.mlocked_mb = self.file_mb = 0.0
        return freed

    def free_pgtables(self) -> float:
        freed = self.pgtable_mb
        self.pgtable_mb = 0.0
        return freed

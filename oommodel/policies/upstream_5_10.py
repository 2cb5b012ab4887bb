"""(a5) Debian's 5.10.223, the calibration kernel's stock code path: v4.19's exit_mmap (self-reap,
MMF_OOM_SKIP right after it, the mmap_write_lock/unlock barrier) with the oom_reaper started from a
2 s timer (OOM_REAPER_DELAY, backported from 5.18), the killable `oom_lock` of the memcg OOM path
(5.1+), and do_exit()'s sched_move_task() requeue (5.6+, Debian's CONFIG_SCHED_AUTOGROUP)."""

from oommodel.policies.base import OomPolicy, ReaperKind
from oommodel.policies.upstream_4_19 import EXIT_4_19

POLICY = OomPolicy(
    name="upstream_5_10",
    letter="a5",
    description="5.10.223 (Debian): v4.19's exit path; the reaper starts from a 2 s timer; exit-time requeue",
    references=(
        "5.10.223 mm/mmap.c:exit_mmap() (the v4.19 code: __oom_reap_task_mm, MMF_OOM_SKIP, mmap_write_lock)",
        "5.10.223 mm/oom_kill.c:queue_oom_reaper() (OOM_REAPER_DELAY, Debian's backport of the 5.18 change)",
        "5.10.223 kernel/exit.c:do_exit() -> sched_autogroup_exit_task() -> sched_move_task() -> resched_curr()",
    ),
    exit_steps=EXIT_4_19,
    reaper=ReaperKind.UNCONDITIONAL,
    kernel_base="5.10.223 (Debian)",
    oom_reaper_delay_s=2.0,
    memcg_oom_lock_killable=True,
    exit_sched_move_resched=True,
)

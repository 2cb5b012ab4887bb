"""(f) v6.1 upstream: exit_mmap sets MMF_OOM_SKIP for every mm right after unmap_vmas; the
reaper runs from a timer OOM_REAPER_DELAY = 2*HZ after the kill and reaps mlocked vmas too.
Late in do_exit, sched_move_task() requeues the task at the tail of its priority and reschedules
(taken at once under preempt=full; oommodel.kernel.exit.do_exit_tail)."""

from oommodel.policies.base import OomPolicy, Op, Phase, ReaperKind, step, work

# mm/mmap.c:exit_mmap() as of v6.1 (after "mm: drop oom code from exit_mmap")
EXIT_6_1 = (
    work(Phase.MMU_NOTIFIER_RELEASE),
    step(Op.DOWN_READ),
    work(Phase.UNMAP_VMAS),
    step(Op.UP_READ),
    step(Op.SET_SKIP),
    step(Op.PRIORITY_INJECTION),
    step(Op.DOWN_WRITE),
    work(Phase.FREE_PGTABLES),
    work(Phase.TLB_FINISH_MMU),
    work(Phase.REMOVE_VMA),
    step(Op.UP_WRITE),
)

POLICY = OomPolicy(
    name="upstream_6_1",
    letter="f",
    description="v6.1: exit sets MMF_OOM_SKIP after unmap_vmas; reaper 2 s after the kill, reaps mlocked too",
    references=(
        "20220510030014.3842475-2-surenb@google.com",
        "commit f798a1d4f94d",
        "v6.1 mm/oom_kill.c:queue_oom_reaper() (OOM_REAPER_DELAY)",
        "v6.1 kernel/exit.c:do_exit() -> sched_autogroup_exit_task() -> sched_move_task() (commit 2a4b03ffc69f)",
    ),
    exit_steps=EXIT_6_1,
    reaper=ReaperKind.UNCONDITIONAL,
    kernel_base="6.1",
    oom_reaper_delay_s=2.0,
    reaper_reaps_mlocked=True,
    memcg_oom_lock_killable=True,
    exit_sched_move_resched=True,
)

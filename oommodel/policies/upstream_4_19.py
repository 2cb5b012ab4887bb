"""(a) v4.19/v4.20 upstream: exit_mmap reaps itself and sets MMF_OOM_SKIP before munlock,
unmap, page tables and `->close`; the oom_reaper sets it after one reap or 10 failed tries."""

from oommodel.policies.base import OomPolicy, Op, Phase, ReaperKind, step, work

# mm/mmap.c:exit_mmap() as of v4.19
EXIT_4_19 = (
    work(Phase.MMU_NOTIFIER_RELEASE),
    work(Phase.SELF_REAP, victim_only=True),
    step(Op.SET_SKIP, victim_only=True),
    step(Op.DOWN_WRITE, victim_only=True),   # barrier: the reaper is done or sees the flag
    step(Op.UP_WRITE, victim_only=True),
    work(Phase.MUNLOCK),
    work(Phase.UNMAP_VMAS),
    step(Op.PRIORITY_INJECTION),
    work(Phase.FREE_PGTABLES),
    work(Phase.TLB_FINISH_MMU),
    work(Phase.REMOVE_VMA),
)

POLICY = OomPolicy(
    name="upstream_4_19",
    letter="a",
    description="v4.19 baseline: exit sets MMF_OOM_SKIP right after its own reap; the reaper after one reap or 10 tries",
    references=(
        "v4.19 mm/oom_kill.c:oom_reap_task(), mm/mmap.c:exit_mmap()",
        "commit 212925802454 (mm: oom: let oom_reap_task and exit_mmap run concurrently)",
        "alpine.DEB.2.21.1806211434420.51095@chino.kir.corp.google.com",
    ),
    exit_steps=EXIT_4_19,
    reaper=ReaperKind.UNCONDITIONAL,
    kernel_base="4.19",
)

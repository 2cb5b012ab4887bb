"""(c) Handa's 2018-11-16 variant of RFC v2: the exit path holds `oom_lock` from the handover
point until MMF_OOM_SKIP, so allocators wait (sleep) instead of spinning while it finishes."""

from oommodel.policies.base import OomPolicy, Op, Phase, ReaperKind, step, work

EXIT_OOM_LOCK = (
    work(Phase.MMU_NOTIFIER_RELEASE),
    step(Op.DOWN_WRITE, victim_only=True),
    work(Phase.MUNLOCK),
    step(Op.UP_WRITE, victim_only=True),
    work(Phase.UNMAP_VMAS),
    step(Op.DOWN_WRITE),
    work(Phase.UNLINK_VMAS),
    step(Op.OOM_LOCK, victim_only=True),
    step(Op.CLEAR_MMAP),
    step(Op.UP_WRITE),
    step(Op.PRIORITY_INJECTION),
    work(Phase.FREE_PGTABLES),
    work(Phase.TLB_FINISH_MMU),
    step(Op.SET_SKIP),
    step(Op.OOM_UNLOCK, victim_only=True),
    work(Phase.REMOVE_VMA),
)

POLICY = OomPolicy(
    name="handoff_oom_lock",
    letter="c",
    description="Handa: RFC v2 plus oom_lock held from the handover point until MMF_OOM_SKIP",
    references=("2d7d4cf6-bdd4-741d-764b-beb96d7af296@i-love.sakura.ne.jp",),
    exit_steps=EXIT_OOM_LOCK,
    reaper=ReaperKind.HANDOVER,
    kernel_base="4.20-rc2 + RFC v2 + Handa 2018-11-16",
    reaper_quarter_rule=True,
)

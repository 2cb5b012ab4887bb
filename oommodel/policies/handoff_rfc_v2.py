"""(b) Hocko's RFC v2 (2018-10-25): the reaper leaves MMF_OOM_SKIP to the exit path once
`mm->mmap == NULL` ("handed over"); exit sets it after page-table freeing, as agreed on
2018-10-30, or after the `remove_vma` loop as posted (`skip_after: close`)."""

from oommodel.policies.base import OomPolicy, Op, Phase, ReaperKind, step, work

_HEAD = (
    work(Phase.MMU_NOTIFIER_RELEASE),
    step(Op.DOWN_WRITE, victim_only=True),   # patch 1: munlock under mmap_sem for victims
    work(Phase.MUNLOCK),
    step(Op.UP_WRITE, victim_only=True),
    work(Phase.UNMAP_VMAS),
    step(Op.DOWN_WRITE),                     # patch 3: __unlink_vmas, then mm->mmap = NULL
    work(Phase.UNLINK_VMAS),
    step(Op.CLEAR_MMAP),
    step(Op.UP_WRITE),
    step(Op.PRIORITY_INJECTION),
    work(Phase.FREE_PGTABLES),
    work(Phase.TLB_FINISH_MMU),
)

EXIT_SKIP_AFTER_PGTABLES = _HEAD + (step(Op.SET_SKIP), work(Phase.REMOVE_VMA))
EXIT_SKIP_AFTER_CLOSE = _HEAD + (work(Phase.REMOVE_VMA), step(Op.SET_SKIP))

POLICY = OomPolicy(
    name="handoff_rfc_v2",
    letter="b",
    description="Hocko RFC v2: reaper hands MMF_OOM_SKIP over to exit_mmap once mm->mmap is NULL",
    references=(
        "20181025082403.3806-1-mhocko@kernel.org",
        "20181025082403.3806-2-mhocko@kernel.org",
        "20181025082403.3806-3-mhocko@kernel.org",
        "20181025082403.3806-4-mhocko@kernel.org",
        "20181030121012.GC32673@dhcp22.suse.cz",
        "9dfd5c87-ae48-8ffb-fbc6-706d627658ff@i-love.sakura.ne.jp",
    ),
    exit_steps=EXIT_SKIP_AFTER_PGTABLES,
    reaper=ReaperKind.HANDOVER,
    kernel_base="4.20-rc2 + RFC v2",
    reaper_quarter_rule=True,
    options={"skip_after": "pgtables"},
    option_variants={"skip_after": {"pgtables": EXIT_SKIP_AFTER_PGTABLES, "close": EXIT_SKIP_AFTER_CLOSE}},
)

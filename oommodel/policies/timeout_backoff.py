"""(d1) Rientjes v3 (2018-06-21): a per-mm deadline `oom_free_timeout_ms` after the kill; the
reaper reaps once, requeues the mm every HZ/10 and sets MMF_OOM_SKIP only at the deadline."""

from oommodel.policies.base import OomPolicy, Op, Phase, ReaperKind, step, work

EXIT_RIENTJES = (
    work(Phase.MMU_NOTIFIER_RELEASE),
    step(Op.OOM_LOCK, victim_only=True),      # the exit path reaps itself under oom_lock
    work(Phase.SELF_REAP, victim_only=True),
    step(Op.SET_UNSTABLE, victim_only=True),
    step(Op.OOM_UNLOCK, victim_only=True),
    step(Op.DOWN_WRITE, victim_only=True),
    step(Op.UP_WRITE, victim_only=True),
    work(Phase.MUNLOCK),
    work(Phase.UNMAP_VMAS),
    step(Op.PRIORITY_INJECTION),
    work(Phase.FREE_PGTABLES),
    work(Phase.TLB_FINISH_MMU),
    step(Op.SET_SKIP, victim_only=True),
    work(Phase.REMOVE_VMA),
)

POLICY = OomPolicy(
    name="timeout_backoff",
    letter="d1",
    description="Rientjes v3: reaper sets MMF_OOM_SKIP at kill time + timeout_s; exit after page tables",
    references=("alpine.DEB.2.21.1806211434420.51095@chino.kir.corp.google.com",),
    exit_steps=EXIT_RIENTJES,
    reaper=ReaperKind.DEADLINE,
    kernel_base="4.18 + Rientjes v3",
    options={"timeout_s": 1.0},
)

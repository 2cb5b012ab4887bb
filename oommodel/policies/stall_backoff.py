"""(d2) Handa v2 (2018-09-08): MMF_OOM_SKIP as in v4.19, but out_of_memory() keeps waiting on
the victim until its `__mmput` finishes or its score has not dropped for `stall_s`."""

from oommodel.policies.base import OomPolicy, ReaperKind
from oommodel.policies.upstream_4_19 import EXIT_4_19

POLICY = OomPolicy(
    name="stall_backoff",
    letter="d2",
    description="Handa v2: victim stays pending until __mmput ends or its score stalls for stall_s",
    references=("1536382452-3443-1-git-send-email-penguin-kernel@I-love.SAKURA.ne.jp",),
    exit_steps=EXIT_4_19,
    reaper=ReaperKind.UNCONDITIONAL,
    kernel_base="4.19-rc + Handa v2 (2018-09-08)",
    victim_list_backoff=True,
    options={"stall_s": 3.0},
)

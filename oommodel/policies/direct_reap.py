"""(e) Handa's direct OOM reaping (2018-07-03): no oom_reaper kthread; the allocator that runs
out_of_memory() reaps pending victims in its own context and at its own priority."""

from oommodel.policies.base import OomPolicy, ReaperKind
from oommodel.policies.upstream_4_19 import EXIT_4_19

POLICY = OomPolicy(
    name="direct_reap",
    letter="e",
    description="Handa: allocators reap victims themselves; victim pending until __mmput or a stall_s stall",
    references=(
        "1530627910-3415-4-git-send-email-penguin-kernel@I-love.SAKURA.ne.jp",
        "d9595c92-6763-35cb-b989-0848cf626cb9@i-love.sakura.ne.jp",
    ),
    exit_steps=EXIT_4_19,
    reaper=ReaperKind.NONE,
    kernel_base="4.18-rc + Handa 3/8 (2018-07-03)",
    victim_list_backoff=True,
    direct_reap=True,
    options={"stall_s": 3.0},
)

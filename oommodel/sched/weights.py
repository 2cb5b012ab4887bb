"""CFS load weights: kernel/sched/core.c:sched_prio_to_weight[] and WEIGHT_IDLEPRIO as of v4.19.

A nice step is worth about 10 % CPU against a neighbour one nice level away (factor ~1.25).
"""

from __future__ import annotations

SCHED_PRIO_TO_WEIGHT: tuple[int, ...] = (
    # -20 .. -16
    88761, 71755, 56483, 46273, 36291,
    # -15 .. -11
    29154, 23254, 18705, 14949, 11916,
    # -10 .. -6
    9548, 7620, 6100, 4904, 3906,
    # -5 .. -1
    3121, 2501, 1991, 1586, 1277,
    # 0 .. 4
    1024, 820, 655, 526, 423,
    # 5 .. 9
    335, 272, 215, 172, 137,
    # 10 .. 14
    110, 87, 70, 56, 45,
    # 15 .. 19
    36, 29, 23, 18, 15,
)

WEIGHT_IDLEPRIO: int = 3
"""kernel/sched/sched.h: SCHED_IDLE tasks get weight 3 whatever their nice value."""

NICE_0_LOAD: int = 1024


def nice_to_weight(nice: int) -> int:
    """Weight of a SCHED_NORMAL/SCHED_BATCH task at `nice` (-20..19)."""
    if not -20 <= nice <= 19:
        raise ValueError(f"nice must be in -20..19, got {nice}")
    return SCHED_PRIO_TO_WEIGHT[nice + 20]

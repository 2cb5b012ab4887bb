"""Static scheduling descriptions: SchedPolicy, SchedAttr (sched_setattr() arguments), MachineSpec.

Values only (frozen); the runtime lives in machine.py and the modules it lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from oommodel.sched.weights import WEIGHT_IDLEPRIO, nice_to_weight


class SchedPolicy(str, Enum):
    """include/uapi/linux/sched.h policies that matter here (SCHED_DEADLINE is out of scope)."""

    FIFO = "fifo"
    RR = "rr"
    NORMAL = "normal"
    BATCH = "batch"
    IDLE = "idle"


_RT = (SchedPolicy.FIFO, SchedPolicy.RR)
_NICE = (SchedPolicy.NORMAL, SchedPolicy.BATCH)
_ATTR_RE = re.compile(r"^(fifo|rr|normal|batch|idle)(-?\d+)?$")   # the one text form (scenario, CLI, str())


@dataclass(frozen=True, slots=True)
class SchedAttr:
    """A thread's policy and priority, validated like sched_setscheduler() would."""

    policy: SchedPolicy
    rt_priority: int = 0
    nice: int = 0

    def __post_init__(self) -> None:
        policy = SchedPolicy(self.policy)
        if policy is not self.policy:
            object.__setattr__(self, "policy", policy)
        if policy in _RT:
            if not 1 <= self.rt_priority <= 99:
                raise ValueError(f"{policy.value}: rt_priority must be in 1..99, got {self.rt_priority}")
            if self.nice != 0:
                raise ValueError(f"{policy.value}: nice is not allowed for RT policies")
        else:
            if self.rt_priority != 0:
                raise ValueError(f"{policy.value}: rt_priority is only allowed for fifo/rr")
            if policy is SchedPolicy.IDLE and self.nice != 0:
                raise ValueError("idle: nice is ignored by the kernel; leave it 0")
            if not -20 <= self.nice <= 19:
                raise ValueError(f"{policy.value}: nice must be in -20..19, got {self.nice}")

    @property
    def is_rt(self) -> bool:
        return self.policy in _RT

    @property
    def weight(self) -> int:
        """CFS load weight; 0 for RT threads (unused)."""
        if self.policy in _NICE:
            return nice_to_weight(self.nice)
        if self.policy is SchedPolicy.IDLE:
            return WEIGHT_IDLEPRIO
        return 0

    @classmethod
    def parse(cls, text: str) -> SchedAttr:
        """Parse "idle", "normal19", "batch-5", "fifo50", "rr10": the one text form of a SchedAttr
        (`str()` gives it back; the scenario's `victim.sched_at_handover` is validated with it)."""
        m = _ATTR_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"expected idle | normal<nice> | batch<nice> | fifo<prio> | rr<prio>, got {text!r}")
        policy = SchedPolicy(m.group(1))
        num = m.group(2)
        if policy is SchedPolicy.IDLE:
            if num is not None:
                raise ValueError(f"idle takes no number, got {text!r}")
            return cls(policy)
        if num is None:
            example = "50" if policy in _RT else "0"
            raise ValueError(f"{policy.value} needs a number, e.g. {policy.value}{example}, got {text!r}")
        if policy in _RT:
            return cls(policy, rt_priority=int(num))
        return cls(policy, nice=int(num))

    def __str__(self) -> str:
        if self.policy in _RT:
            return f"{self.policy.value}{self.rt_priority}"
        if self.policy is SchedPolicy.IDLE:
            return "idle"
        return f"{self.policy.value}{self.nice}"


_PREEMPT = ("none", "voluntary", "full")
MAX_CPUS = 256   # the one machine-size limit: scenario validation and MachineSpec both enforce it


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """CPU count, HZ, preemption model and RT throttling sysctls (sched_rt_runtime_us / _period_us)."""

    cpus: int
    hz: int = 1000
    preempt: str = "full"
    rt_runtime_us: int = 950000
    rt_period_us: int = 1000000
    rt_runtime_share: bool = True
    balance_interval_s: float = 0.004

    def __post_init__(self) -> None:
        if not 1 <= self.cpus <= MAX_CPUS:
            raise ValueError(f"cpus must be in 1..{MAX_CPUS}, got {self.cpus}")
        if self.hz <= 0:
            raise ValueError(f"hz must be > 0, got {self.hz}")
        if self.preempt not in _PREEMPT:
            raise ValueError(f"preempt must be one of {_PREEMPT}, got {self.preempt!r}")
        if self.rt_period_us < 1:
            raise ValueError(f"rt_period_us must be >= 1, got {self.rt_period_us}")
        if self.rt_runtime_us < -1:
            raise ValueError(f"rt_runtime_us must be -1 or >= 0, got {self.rt_runtime_us}")
        if not self.balance_interval_s > 0:
            raise ValueError(f"balance_interval_s must be > 0, got {self.balance_interval_s}")

    @property
    def rt_throttling(self) -> bool:
        """False when RT throttling can never trigger (runtime -1 or >= period)."""
        return 0 <= self.rt_runtime_us < self.rt_period_us

"""What a policy variant is: data (who sets `MMF_OOM_SKIP`, where, under which lock) plus
the few decisions that data cannot express.

A variant is one small file that builds an `OomPolicy`, and one line in the registry
(`oommodel/policies/__init__.py`). The exit path is a list of `ExitStep`s that
`oommodel.kernel.exit_mmap` interprets, so the difference between, say, RFC v2 and
Handa's `oom_lock` variant is visible as two lists side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class PolicyError(ValueError):
    """An unknown policy or a bad policy option; the message names it."""


class Op(Enum):
    """One step of `exit_mmap()` as a policy arranges it."""

    WORK = "work"                    # a phase that costs CPU and frees something (see Phase)
    SET_SKIP = "set_skip"            # set MMF_OOM_SKIP
    SET_UNSTABLE = "set_unstable"    # set MMF_UNSTABLE (the reaper must not touch the mm again)
    DOWN_READ = "down_read"          # mmap_sem
    UP_READ = "up_read"
    DOWN_WRITE = "down_write"
    UP_WRITE = "up_write"
    OOM_LOCK = "oom_lock"            # mutex_lock(&oom_lock)
    OOM_UNLOCK = "oom_unlock"
    CLEAR_MMAP = "clear_mmap"        # mm->mmap = NULL: RFC v2's handover point
    PRIORITY_INJECTION = "priority_injection"  # Handa's test hack: victim.sched_at_handover


class Phase(Enum):
    """The phases of `exit_mmap()` (reference section 1.5), named as in the kernel."""

    MMU_NOTIFIER_RELEASE = "E0 mmu_notifier_release"
    SELF_REAP = "E1 __oom_reap_task_mm"
    MUNLOCK = "E3 munlock_vma_pages_all"
    UNMAP_VMAS = "E5 unmap_vmas"
    UNLINK_VMAS = "unlink_vmas"
    FREE_PGTABLES = "E6 free_pgtables"
    TLB_FINISH_MMU = "E7 tlb_finish_mmu"
    REMOVE_VMA = "E8 remove_vma"


@dataclass(frozen=True, slots=True)
class ExitStep:
    op: Op
    phase: Phase | None = None
    victim_only: bool = False        # `if (unlikely(mm_is_oom_victim(mm)))` in the kernel


def work(phase: Phase, victim_only: bool = False) -> ExitStep:
    return ExitStep(Op.WORK, phase, victim_only)


def step(op: Op, victim_only: bool = False) -> ExitStep:
    return ExitStep(op, None, victim_only)


class ReaperKind(Enum):
    """How the reaper ends its work on one victim."""

    UNCONDITIONAL = "unconditional"  # v4.19 / v6.1: MMF_OOM_SKIP after success or 10 tries
    HANDOVER = "handover"            # RFC v2 patch 3: leave MMF_OOM_SKIP to exit once mm->mmap == NULL
    DEADLINE = "deadline"            # Rientjes v3: requeue every HZ/10 until kill time + timeout
    NONE = "none"                    # no oom_reaper kthread (direct OOM reaping)


@dataclass(frozen=True)
class OomPolicy:
    """One variant of the OOM reaper / exit_mmap handoff (reference section 2)."""

    name: str
    letter: str
    description: str
    references: tuple[str, ...]
    exit_steps: tuple[ExitStep, ...]
    reaper: ReaperKind
    # The kernel the variant stands for ("4.19", "4.20-rc2 + RFC v2", "5.10.223 (Debian)", "6.1"):
    # which of the later kernels' facts (OOM_REAPER_DELAY, the exit-time requeue) apply to it.
    kernel_base: str
    oom_reaper_delay_s: float = 0.0            # OOM_REAPER_DELAY in seconds (2*HZ jiffies in v6.1); 0: no timer
    reaper_reaps_mlocked: bool = False         # v6.1 reaps VM_LOCKED vmas
    reaper_quarter_rule: bool = False          # RFC v2 patch 2: retry while > 1/4 of the start remains
    victim_list_backoff: bool = False          # Handa: pending until __mmput or a stall of stall_s
    direct_reap: bool = False                  # allocators reap victims themselves
    memcg_oom_lock_killable: bool = False      # mutex_lock_killable (5.1+) in the memcg OOM path
    exit_sched_move_resched: bool = False      # 5.6+: do_exit() -> sched_move_task() ends in resched_curr()
    options: Mapping[str, Any] = field(default_factory=dict)
    option_variants: Mapping[str, Mapping[Any, tuple[ExitStep, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One option at most chooses the exit path: two would need a table of their combinations.
        if len(self.option_variants) > 1:
            raise PolicyError(f"{self.name}: at most one option may select exit steps, "
                              f"got {sorted(self.option_variants)}")
        for key in self.option_variants:
            if key not in self.options:
                raise PolicyError(f"{self.name}: option_variants key {key!r} is not an option")

    def check_options(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled; raises PolicyError naming the option."""
        out = dict(self.options)
        for key, value in opts.items():
            if key not in self.options:
                valid = ", ".join(sorted(self.options)) or "none"
                raise PolicyError(f"{self.name}: unknown option {key!r} (valid: {valid})")
            default = self.options[key]
            if isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise PolicyError(f"{self.name}.{key}: must be a number > 0, got {value!r}")
                value = float(value)
            elif key in self.option_variants and value not in self.option_variants[key]:
                allowed = " | ".join(map(str, self.option_variants[key]))
                raise PolicyError(f"{self.name}.{key}: must be one of {allowed}, got {value!r}")
            out[key] = value
        return out

    def steps_for(self, opts: Mapping[str, Any]) -> tuple[ExitStep, ...]:
        """The exit steps for these options: the one option in `option_variants` (if any) picks them."""
        if not self.option_variants:
            return self.exit_steps
        ((key, variants),) = self.option_variants.items()
        return variants[opts.get(key, self.options[key])]

"""The run state: plain data holding every runtime piece of one simulated machine.

Every kernel module takes a `RunState` as its first argument; this module imports no kernel
module that works on it (only data types), so any of them can import it without a cycle.
`World` (world.py) builds one per `simulate()` call and nothing else holds one: no module or
class state, so runs are independent in any worker and any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import simpy

from oommodel.outcome import SkipBy

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.detector import AllocatorStallDetector
    from oommodel.kernel.config import RunConfig
    from oommodel.kernel.costs import RunCosts
    from oommodel.kernel.locks import Mutex
    from oommodel.kernel.oom_domain import OomDomain
    from oommodel.kernel.task import Process
    from oommodel.policies.base import OomPolicy
    from oommodel.sched import Machine, Thread
    from oommodel.streams import Streams


class SkipRecord(NamedTuple):
    """One MMF_OOM_SKIP set on an OOM victim: which process, by whom, when."""

    pid: int
    by: SkipBy
    time: float


@dataclass(slots=True)
class Counters:
    """What a run counts on its way (written by accounting.py and the kernel functions)."""

    kills: int = 0
    extra_kills: int = 0
    handovers: int = 0
    reaper_attempts: int = 0
    oom_calls: int = 0
    memory_freed_mb: float = 0.0
    first_kill_s: float | None = None
    first_progress_s: float | None = None
    first_skip_by: SkipBy | None = None
    first_skip_s: float | None = None
    first_released_by: SkipBy | None = None
    panic: bool = False
    exits_pending: int = 0            # killed processes past mmput() whose last thread has not exited
    exits_pending_since: float = 0.0  # when exits_pending last changed
    exits_pending_max: int = 0        # the most pending for a positive stretch of time
    exit_delay_max_s: float = 0.0


@dataclass(slots=True, eq=False)
class ReaperState:
    """The oom_reaper kthread (mm/oom_kill.c, v4.19): its thread and its victim queue."""

    th: Thread
    wake: simpy.Event                     # succeeds when a victim is queued while it sleeps
    queue: list[Process] = field(default_factory=list)   # oom_reaper_list: LIFO, one victim at a time
    wakeups: int = 0                      # victims taken off the queue so far
    timer_pending: bool = False           # waiting for a timer (OOM_REAPER_DELAY or HZ/10 sleep)
    waker_cpu: int | None = None          # CPU of the last wake_oom_reaper() (try_to_wake_up()'s this_cpu)
    idle_exits: int = 0                   # wake-ups drawn from machine.idle_exit_us so far


@dataclass(slots=True, eq=False)
class SoftirqState:
    """TIMER softirq and `ksoftirqd/N` per CPU (kernel/softirq.c)."""

    defer: bool                           # machine.softirq == "ksoftirqd_defer"
    awake_p: float | None                 # fixed P(ksoftirqd/N already awake at a timer expiry), or None
    wake_hz: float = 0.0                  # else: rate of wakeup_softirqd() per CPU (ksoftirqd_awake_p_at_expiry)
    awake: dict[int, bool] = field(default_factory=dict)
    pending: dict[int, list[simpy.Event]] = field(default_factory=dict)   # timers left to ksoftirqd/N
    threads: dict[int, Thread] = field(default_factory=dict)              # ksoftirqd/N, spawned on first use
    seq: dict[int, int] = field(default_factory=dict)                     # expiries seen per CPU (stream names)


@dataclass(slots=True, eq=False)
class RunState:
    """Runtime objects of one run; the static inputs are `cfg` (frozen) and `policy` (frozen)."""

    env: simpy.Environment
    cfg: RunConfig
    policy: OomPolicy
    streams: Streams
    machine: Machine
    costs: RunCosts
    domain: OomDomain | None
    slowpath: Callable[..., Any]          # try_charge_slowpath (memcg) or alloc_slowpath (global)
    oom_lock: Mutex
    softirq: SoftirqState
    stop: simpy.Event                     # succeeds when the run ends (horizon or panic)
    stats: Counters = field(default_factory=Counters)
    victims: list[Process] = field(default_factory=list)       # in kill order
    skip_log: list[SkipRecord] = field(default_factory=list)   # every MMF_OOM_SKIP set on a victim
    touching: list[Thread] = field(default_factory=list)       # threads faulting memory in right now
    recycled_mb: float = 0.0              # memory freed in this run and not faulted in again (first-touch cost)
    procs: list[Process] = field(default_factory=list)
    scan_order: list[Process] = field(default_factory=list)    # the task list select_bad_process() walks
    detector: AllocatorStallDetector = field(init=False)
    reaper: ReaperState | None = field(init=False)

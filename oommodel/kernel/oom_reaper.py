"""The `oom_reaper` kthread and the reap itself.

Models mm/oom_kill.c:oom_reaper(), oom_reap_task(), oom_reap_task_mm() as of v4.19, with
RFC v2's handover (b, c), Rientjes's deadline (d1) and v6.1's delayed start (f). The race
that matters, drawn as the kernel draws races above __oom_reap_task_mm():

    oom_reaper                              exit_mmap (victim, RFC v2)
    ----------                              --------------------------
    down_read_trylock(mmap_sem) ok          unmap_vmas()            [no lock]
    __oom_reap_task_mm()                    down_write(mmap_sem)    [waits for the reaper]
    up_read(mmap_sem)                       __unlink_vmas(); mm->mmap = NULL
    ...sleeps HZ/10, retries...             up_write(mmap_sem)
    down_read_trylock ok, mm->mmap == NULL  free_pgtables(); tlb_finish_mmu()
    -> "handed over": leaves MMF_OOM_SKIP   set_bit(MMF_OOM_SKIP)   <- only if the victim
       to the exit path                                                 gets a CPU again
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oommodel.kernel.costs import REAPER_WAKE_S, ZAP_RESCHED_S
from oommodel.kernel.exit import unmap_vmas_progress
from oommodel.kernel.accounting import free_memory, note_handover
from oommodel.kernel.mm import MMF
from oommodel.kernel.oom_victim import set_mmf_oom_skip
from oommodel.kernel.softirq import add_timer
from oommodel.kernel.state import ReaperState
from oommodel.outcome import SkipBy
from oommodel.policies.base import ReaperKind

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.state import RunState
    from oommodel.kernel.task import Process
    from oommodel.sched import Thread

MAX_OOM_REAP_RETRIES = 10         # mm/oom_kill.c, v4.19 and v6.1


def oom_reap_task_mm(state: RunState, th: Thread, victim: Process, by: SkipBy):
    """Models mm/oom_kill.c:oom_reap_task_mm() -> __oom_reap_task_mm(), v4.19: one pass by `th`
    (the reaper, or an allocator under policy e).

    Returns True when the pass is a success for the caller's retry loop.
    """
    mm = victim.mm
    policy = state.policy
    if not mm.mmap_sem.down_read_trylock(th):
        return False
    try:
        unmap_vmas_progress(state, victim)              # what the exit path has zapped meanwhile
        if mm.has(MMF.MMF_OOM_SKIP):
            return True
        if policy.reaper is ReaperKind.HANDOVER and mm.mmap_cleared:
            return True                                  # patch 3: exit_mmap is past the handover point
        if policy.reaper is ReaperKind.DEADLINE and mm.has(MMF.MMF_UNSTABLE):
            return True                                  # Rientjes: reap once only
        if policy.reaper_quarter_rule and mm.reap_start_mb is None:
            mm.reap_start_mb = mm.badness_mb()
        mm.flags |= MMF.MMF_UNSTABLE
        if mm.zap is not None and state.cfg.reaper_shared_zap:
            yield from share_zap(state, th, victim)
        amount = mm.reapable_mb(policy.reaper_reaps_mlocked)
        if amount > 0.0:
            cost = amount * state.costs.unmap_s_per_mb
            if cost > 0.0:
                yield state.machine.run(th, cost, resched_every_s=ZAP_RESCHED_S)
            free_memory(state, victim, mm.reap(policy.reaper_reaps_mlocked))
        if by is SkipBy.DIRECT:
            set_mmf_oom_skip(state, victim, SkipBy.DIRECT)   # Handa 3/8: stop direct reaping this mm
        if policy.reaper_quarter_rule:
            return mm.badness_mb() <= mm.reap_start_mb / 4.0 + 1e-9   # patch 2
        return True
    finally:
        mm.mmap_sem.up_read(th)


def share_zap(state: RunState, th: Thread, victim: Process):
    """A reap that meets the exit path's `unmap_vmas()` half way (`reaper.shared_zap`).

    Both zap the same page tables, each pte table under its split lock: `unmap_page_range()` ->
    `zap_pte_range()` for the reaper (mm/oom_kill.c:__oom_reap_task_mm(), 5.10), the same for the
    victim's `unmap_vmas()` (mm/memory.c), which holds no `mmap_lock`. The one behind finds the
    other's ptes already none, skips them at next to no cost and catches up, so the two share
    what is left; each frees its own part (the victim's goes into its `mmu_gather`,
    exit.py:tlb_gather). The 5.10 boots show what follows from it: victims that shrink by amounts
    that are not whole gathers (102696, 77616, 67584, 39600, 31416 kB, down to 856 kB), where
    "whichever finishes first takes all" leaves a 75.8 MB victim nothing to keep; the victim
    reaches its handover point only after the reaper's `MMF_OOM_SKIP` (it waits for the read lock
    in `mmap_write_lock()`: 290 of the 293 victims over 20 MB that got there within 5 s, the
    other 3 within 2 ms, two CPUs' printk clocks).
    Fluid stand-in: the reaper takes the share of the reapable pages left that its CPU rate (1,
    it is running) has against the victim's current rate, at once; the victim's run is cut short
    and restarted on the rest. `reaper.shared_zap: false` restores the model before it (0.4.0): each
    of the two goes on as if alone, and whichever ends first frees all that is left.
    """
    mm = victim.mm
    assert mm.zap is not None
    vth = mm.zap[0]
    rate_v = state.machine.rate(vth)
    share = 1.0 / (1.0 + rate_v)
    reap_mlocked = state.policy.reaper_reaps_mlocked
    mine = mm.take_reapable(mm.reapable_mb(reap_mlocked) * share, reap_mlocked)
    state.machine.cancel_run(vth)            # the victim's unmap_vmas() goes on over the rest
    if mine > 0.0:
        cost = mine * state.costs.unmap_s_per_mb
        if cost > 0.0:
            yield state.machine.run(th, cost, resched_every_s=ZAP_RESCHED_S)
        free_memory(state, victim, mine)
    unmap_vmas_progress(state, victim)       # what the victim zapped meanwhile


def start_oom_reaper(state: RunState) -> ReaperState:
    """mm/oom_kill.c:oom_init(): kthread_run(oom_reaper) on the scenario's CPUs and sched attr."""
    cfg = state.cfg
    allowed = cfg.reaper_cpus if cfg.reaper_cpus is not None else tuple(range(cfg.machine.cpus))
    # where the kthread last ran before the first kill: its prev_cpu for the first wake-up
    if cfg.reaper_last_cpu is None:
        last = allowed[int(state.streams.at_start("reaper_last_cpu").integers(len(allowed)))]
    else:
        last = cfg.reaper_last_cpu
    th = state.machine.spawn("oom_reaper", "oom_reaper", cfg.reaper_attr, cfg.reaper_cpus, last_cpu=last)
    reaper = ReaperState(th=th, wake=state.env.event())
    state.env.process(oom_reaper(state, reaper))
    return reaper


def wake_oom_reaper(state: RunState, victim: Process, waker_cpu: int | None = None) -> None:
    """Models mm/oom_kill.c:wake_oom_reaper(), v4.19: push at the head, skipping a task already
    queued, and wake_up(&oom_reaper_wait) from `waker_cpu`: try_to_wake_up() places the kthread
    by select_task_rq_fair() from there (oommodel/sched/topology.py)."""
    reaper = state.reaper
    assert reaper is not None
    if victim in reaper.queue:
        return
    reaper.queue.append(victim)
    if waker_cpu is not None:
        reaper.waker_cpu = waker_cpu
    if not reaper.wake.triggered:
        reaper.wake.succeed()


def queue_oom_reaper(state: RunState, victim: Process, th: Thread) -> None:
    """Models mm/oom_kill.c:queue_oom_reaper(), v5.18+: add_timer(OOM_REAPER_DELAY) on the CPU
    that runs the OOM killer; the timer wakes the reaper unless the victim got MMF_OOM_SKIP first."""
    reaper = state.reaper
    assert reaper is not None
    hz = state.cfg.hz
    cpu = th.cpu if th.cpu is not None else th.allowed[0]
    delay_jiffies = int(round(state.policy.oom_reaper_delay_s * hz))
    timer = add_timer(state, cpu, state.machine.next_tick(state.env.now, delay_jiffies))
    reaper.timer_pending = True

    def fire(_e, victim=victim, cpu=cpu):
        reaper.timer_pending = False
        if not victim.mm.has(MMF.MMF_OOM_SKIP):
            wake_oom_reaper(state, victim, cpu)       # from the timer softirq on the killing CPU
    timer.callbacks.append(fire)


def oom_reaper(state: RunState, reaper: ReaperState):
    """Models mm/oom_kill.c:oom_reaper(), v4.19: sleep until a victim is queued, reap it."""
    machine = state.machine
    cfg = state.cfg
    while True:
        while not reaper.queue:
            machine.block(reaper.th)
            reaper.wake = state.env.event()
            yield reaper.wake
            if reaper.waker_cpu is not None:
                machine.wake_up(reaper.th, reaper.waker_cpu)
            yield from idle_exit(state, reaper)
            # it looks at nothing before it has a CPU: placed by select_task_rq_fair(), it may
            # wait there behind RT threads until load_balance() pulls it
            if REAPER_WAKE_S > 0.0:
                yield machine.run(reaper.th, REAPER_WAKE_S)
        victim = reaper.queue.pop()
        k = reaper.wakeups
        reaper.wakeups += 1
        p = cfg.reaper_busy_elsewhere_p
        if p > 0.0 and state.streams.uniform("reaper_busy", k) < p:
            busy = float(state.streams.draw(cfg.reaper_busy_elsewhere_s, "reaper_busy_s", k))
            if busy > 0.0:
                yield machine.run(reaper.th, busy)     # reaping a victim of another OOM domain
        if state.policy.reaper is ReaperKind.DEADLINE:
            yield from oom_reap_task_deadline(state, reaper, victim)
        else:
            yield from oom_reap_task(state, reaper, victim)


def idle_exit(state: RunState, reaper: ReaperState):
    """The oom_reaper's CPU leaving idle before the kthread runs: `try_to_wake_up()` ->
    `ttwu_queue()` sends the reschedule IPI to the idle target, which must leave
    `do_idle()` -> `cpuidle_idle_call()` (kernel/sched/idle.c, v4.19 .. v6.1) -- the idle state's
    exit latency on bare metal, a halted vCPU run again by its host in a VM. `machine.idle_exit_us`,
    drawn per wake-up (stream `idle_exit_us`); 0 (the default) costs no event.

    It decides a race the 5.10 boots show: a victim's `unmap_vmas()` against the reaper's first
    look. Under QEMU TCG the reaper flagged a tiny (856 kB) victim a median 7 ms after its kill.
    Approximation: applied to every wake-up of the kthread, also onto a CPU that is not idle
    (where it waits for that CPU anyway).
    """
    value = state.cfg.idle_exit_us
    if value == 0.0:
        return
    k = reaper.idle_exits
    reaper.idle_exits += 1
    delay_s = float(state.streams.draw(value, "idle_exit_us", k)) / 1e6
    if delay_s > 0.0:
        yield state.env.timeout(delay_s)


def sleep_hz_10(state: RunState, reaper: ReaperState):
    """schedule_timeout_idle(HZ/10): a timer on the reaper's CPU (fires in softirq context)."""
    machine = state.machine
    hz = state.cfg.hz
    th = reaper.th
    machine.block(th)
    reaper.timer_pending = True
    cpu = th.cpu if th.cpu is not None else th.allowed[0]
    yield add_timer(state, cpu, machine.next_tick(state.env.now, max(1, hz // 10)))
    reaper.timer_pending = False
    machine.wake_up(th, cpu)             # process_timeout() -> wake_up_process() on the timer's CPU
    yield from idle_exit(state, reaper)
    if REAPER_WAKE_S > 0.0:
        yield machine.run(th, REAPER_WAKE_S)


def oom_reap_task(state: RunState, reaper: ReaperState, victim: Process):
    """Models mm/oom_kill.c:oom_reap_task(), v4.19: up to MAX_OOM_REAP_RETRIES tries, HZ/10 apart."""
    mm = victim.mm
    attempts = 0
    while attempts < MAX_OOM_REAP_RETRIES:
        attempts += 1
        state.stats.reaper_attempts += 1
        ok = yield from oom_reap_task_mm(state, reaper.th, victim, by=SkipBy.REAPER)
        if ok:
            break
        yield from sleep_hz_10(state, reaper)
    if state.policy.reaper is ReaperKind.HANDOVER and mm.mmap_cleared:
        if not mm.has(MMF.MMF_OOM_SKIP):
            note_handover(state, victim)
        return
    set_mmf_oom_skip(state, victim, SkipBy.REAPER)


def oom_reap_task_deadline(state: RunState, reaper: ReaperState, victim: Process):
    """Rientjes v3: reap once, requeue every HZ/10, MMF_OOM_SKIP when the deadline passes."""
    assert state.cfg.timeout_s is not None and victim.kill_time is not None
    deadline = victim.kill_time + state.cfg.timeout_s
    while not victim.mm.has(MMF.MMF_OOM_SKIP):
        if state.env.now >= deadline - 1e-12:
            set_mmf_oom_skip(state, victim, SkipBy.TIMEOUT)
            return
        state.stats.reaper_attempts += 1
        yield from oom_reap_task_mm(state, reaper.th, victim, by=SkipBy.REAPER)
        yield from sleep_hz_10(state, reaper)

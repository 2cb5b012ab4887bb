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

from oommodel.kernel.costs import MAX_OOM_REAP_RETRIES, REAPER_WAKE_S, ZAP_RESCHED_S
from oommodel.kernel.exit import unmap_vmas_progress
from oommodel.kernel.mm import MMF
from oommodel.policies.base import ReaperKind
from oommodel.sched import SchedAttr

if TYPE_CHECKING:  # pragma: no cover
    from oommodel.kernel.task import Process
    from oommodel.kernel.world import World
    from oommodel.sched import Thread


def reap_victim_mm(world: World, th: Thread, victim: Process, by: str):
    """One `__oom_reap_task_mm()` pass by `th` (the reaper, or an allocator under policy e).

    Returns True when the pass is a success for the caller's retry loop.
    """
    mm = victim.mm
    policy = world.policy
    if not mm.mmap_sem.down_read_trylock(th):
        return False
    try:
        unmap_vmas_progress(world, victim)              # what the exit path has zapped meanwhile
        if mm.has(MMF.MMF_OOM_SKIP):
            return True
        if policy.reaper is ReaperKind.HANDOVER and mm.mmap_cleared:
            return True                                  # patch 3: exit_mmap is past the handover point
        if policy.reaper is ReaperKind.DEADLINE and mm.has(MMF.MMF_UNSTABLE):
            return True                                  # Rientjes: reap once only
        if policy.reaper_quarter_rule and mm.reap_start_pages is None:
            mm.reap_start_pages = mm.badness_mb()
        mm.flags |= MMF.MMF_UNSTABLE
        amount = mm.reapable_mb(policy.reaper_reaps_mlocked)
        if amount > 0.0:
            cost = amount * world.costs.unmap_s_per_mb
            if cost > 0.0:
                yield world.machine.run(th, cost, resched_every_s=ZAP_RESCHED_S)
            world.free_memory(victim, mm.reap(policy.reaper_reaps_mlocked))
        if by == "direct":
            world.set_skip(victim, "direct")             # Handa 3/8: stop direct reaping this mm
        if policy.reaper_quarter_rule:
            return mm.badness_mb() <= mm.reap_start_pages / 4.0 + 1e-9   # patch 2
        return True
    finally:
        mm.mmap_sem.up_read(th)


class OomReaper:
    """The kthread: a LIFO queue of victims, one victim at a time (reference section 5.7)."""

    def __init__(self, world: World) -> None:
        self.world = world
        r = world.sc.reaper
        attr = SchedAttr.parse(_sched_text(r.sched))
        allowed = tuple(range(world.sc.machine.cpus)) if r.cpus == "all" else tuple(r.cpus)
        # where the kthread last ran before the first kill: its prev_cpu for the first wake-up
        if r.last_cpu == "any":
            last = allowed[int(world.streams.rng("reaper_last_cpu").integers(len(allowed)))]
        else:
            last = int(r.last_cpu)
        self.th = world.machine.spawn("oom_reaper", "oom_reaper", attr, allowed, last_cpu=last)
        self.waker_cpu: int | None = None   # CPU of the last wake_oom_reaper() (try_to_wake_up()'s this_cpu)
        self.queue: list[Process] = []
        self.wake = world.env.event()
        self.wakeups = 0
        self.timer_pending = False       # waiting for a timer (OOM_REAPER_DELAY or HZ/10 sleep)
        world.env.process(self.oom_reaper())

    def queue_victim(self, victim: Process, waker_cpu: int | None = None) -> None:
        """Models wake_oom_reaper(): push at the head, skipping a task already queued, and
        wake_up(&oom_reaper_wait) from `waker_cpu` (where the wake-up is placed: sched/topology.py)."""
        if victim in self.queue:
            return
        self.queue.append(victim)
        if waker_cpu is not None:
            self.waker_cpu = waker_cpu
        if not self.wake.triggered:
            self.wake.succeed()

    def oom_reaper(self):
        world = self.world
        machine = world.machine
        r = world.sc.reaper
        while True:
            while not self.queue:
                machine.block(self.th)
                self.wake = world.env.event()
                yield self.wake
                if self.waker_cpu is not None:
                    machine.wake_up(self.th, self.waker_cpu)
                # it looks at nothing before it has a CPU: placed by select_task_rq_fair(), it may
                # wait there behind RT threads until load_balance() pulls it
                if REAPER_WAKE_S > 0.0:
                    yield machine.run(self.th, REAPER_WAKE_S)
            victim = self.queue.pop()
            k = self.wakeups
            self.wakeups += 1
            if r.busy_elsewhere_p > 0.0 and world.uniform("reaper_busy", k) < r.busy_elsewhere_p:
                busy = float(world.streams.draw(r.busy_elsewhere_s, "reaper_busy_s", k))
                if busy > 0.0:
                    yield machine.run(self.th, busy)     # reaping a victim of another OOM domain
            if world.policy.reaper is ReaperKind.DEADLINE:
                yield from self.oom_reap_task_deadline(victim)
            else:
                yield from self.oom_reap_task(victim)

    def sleep_hz_10(self):
        """schedule_timeout_idle(HZ/10): a timer on the reaper's CPU (fires in softirq context)."""
        world = self.world
        machine = world.machine
        hz = world.sc.machine.hz
        machine.block(self.th)
        self.timer_pending = True
        cpu = self.th.cpu if self.th.cpu is not None else self.th.allowed[0]
        yield world.softirq.add_timer(cpu, machine.next_tick(world.env.now, max(1, hz // 10)))
        self.timer_pending = False
        machine.wake_up(self.th, cpu)    # process_timeout() -> wake_up_process() on the timer's CPU
        if REAPER_WAKE_S > 0.0:
            yield machine.run(self.th, REAPER_WAKE_S)

    def oom_reap_task(self, victim: Process):
        """Models oom_reap_task(), v4.19: up to MAX_OOM_REAP_RETRIES tries, HZ/10 apart."""
        world = self.world
        mm = victim.mm
        attempts = 0
        while attempts < MAX_OOM_REAP_RETRIES:
            attempts += 1
            world.stats.reaper_attempts += 1
            ok = yield from reap_victim_mm(world, self.th, victim, by="reaper")
            if ok:
                break
            yield from self.sleep_hz_10()
        if world.policy.reaper is ReaperKind.HANDOVER and mm.mmap_cleared:
            if not mm.has(MMF.MMF_OOM_SKIP):
                world.note_handover(victim)
            return
        world.set_skip(victim, "reaper")

    def oom_reap_task_deadline(self, victim: Process):
        """Rientjes v3: reap once, requeue every HZ/10, MMF_OOM_SKIP when the deadline passes."""
        world = self.world
        deadline = victim.kill_time + world.opts["timeout_s"]
        while not victim.mm.has(MMF.MMF_OOM_SKIP):
            if world.env.now >= deadline - 1e-12:
                world.set_skip(victim, "timeout")
                return
            world.stats.reaper_attempts += 1
            yield from reap_victim_mm(world, self.th, victim, by="reaper")
            yield from self.sleep_hz_10()


def _sched_text(sched) -> str:
    if sched.policy in ("fifo", "rr"):
        return f"{sched.policy}{sched.rt_priority}"
    if sched.policy == "idle":
        return "idle"
    return f"{sched.policy}{sched.nice or 0}"

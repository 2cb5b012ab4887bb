"""The only code of the model that touches SimPy's internals (pinned: simpy>=4.1.1,<4.2).

Two shortcuts save one trip through SimPy's event queue per run() completion and per lazy idle
check; neither changes what is computed (see timers.py); and `process_until_stop` is
`Environment.step()` in a loop without a method call per event. They rely on SimPy 4.1 internals:
- an `Event` triggers by setting its private `_ok` and `_value` and is processed by calling its
  `callbacks` list once and setting `callbacks` to None (what `Environment.step()` does);
- a process waiting on an event has exactly one callback, the bound method `Process._resume`;
- `Environment.schedule(event, priority, delay)` queues an already-triggered event;
- the queue is the heap `env._queue` of (time, priority, id, event) and `env._now` the clock, as
  `Environment.step()` pops and sets them; `env._eid` is the counter of event ids;
- a Timeout is an Event with `_delay` set, triggered (`_ok` True, `_value` None) and queued at
  NORMAL priority when made.
Two more save a Python-level call where the model makes thousands per run (same values, same
queue entries): `FastClockEnvironment.now` and `timeout_with_callback`. `start_processes` starts
a run's threads with one event instead of one `Initialize` each; it relies on a Process being an
Event with `_generator` and `_target` set, and on `Process._resume(event)` starting a fresh
generator with `send(event._value)` (None).
tests/model/test_simpy_glue.py fails if any of these changes.
"""

from __future__ import annotations

from heapq import heappop, heappush
from operator import attrgetter
from typing import Callable

import simpy
from simpy.core import EmptySchedule, StopSimulation
from collections.abc import Generator, Sequence

from simpy.events import NORMAL, URGENT, Process, Timeout

PROCESS_RESUME = Process._resume
LAZY_PRIORITY = 2   # SimPy priority after NORMAL (1): runs once everything else of the instant has


class FastClockEnvironment(simpy.Environment):
    """A simpy.Environment whose `now` is read without running Python code.

    SimPy's `now` is a property with a Python getter: a frame on each read, and a run reads the
    clock ~3000 times. Here the property's getter is `attrgetter("_now")`, which returns the
    same attribute from C.
    """

    now = property(attrgetter("_now"), doc="The current simulation time (Environment.now).")


def timeout_with_callback(env: simpy.Environment, delay: float, callback: Callable[[simpy.Event], None]) -> Timeout:
    """`Timeout(env, delay)` with `callback` as its only callback, in one Python call instead of
    three (Timeout.__init__, Environment.schedule, callbacks.append): the bodies of SimPy 4.1's
    Timeout.__init__ and Environment.schedule(), the same heap entry. The CPU timers make
    ~500 per run. `delay` must be >= 0 (not checked: the callers clamp it)."""
    ev = Timeout.__new__(Timeout)
    ev.env = env
    ev.callbacks = [callback]
    ev._value = None
    ev._delay = delay
    ev._ok = True
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), ev))  # type: ignore[attr-defined]
    return ev


def resumes_one_process(ev: simpy.Event | None) -> bool:
    """ev's only callback resumes a SimPy process (a model thread waiting on its run())."""
    if ev is None:
        return False
    cbs = ev.callbacks
    return cbs is not None and len(cbs) == 1 and getattr(cbs[0], "__func__", None) is PROCESS_RESUME


def fire_now(ev: simpy.Event) -> None:
    """Succeed ev with value None and process it at once, in place (what step() would do next)."""
    ev._ok = True
    ev._value = None
    callbacks, ev.callbacks = ev.callbacks, None
    for callback in callbacks:  # type: ignore[union-attr]
        callback(ev)


def schedule_lazy(env: simpy.Environment, check: Callable[[simpy.Event], None]) -> None:
    """Run check after every other event of this instant (a triggered event at LAZY_PRIORITY)."""
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    ev.callbacks.append(check)  # type: ignore[union-attr]
    env.schedule(ev, priority=LAZY_PRIORITY)


def start_processes(env: simpy.Environment, starts: Sequence[tuple[Generator, float]]) -> None:
    """`env.process(gen)` for each (gen, delay) in order, where a positive delay stands for a
    `yield env.timeout(delay)` as the generator's first step: with one SimPy event for all of
    them instead of one `Initialize` each (a run starts 64 threads), and without running that
    first step.

    What SimPy would do, in the same order: the Initialize events made one after the other are
    processed one after the other (URGENT, at now; nothing made in between, so nothing runs in
    between), each running its generator to its first yield. Here one URGENT event does the same
    for each generator in turn when it is processed: a delay makes the Timeout the generator
    would have yielded, at the same moment and so with the same place in the queue, and the
    process resumes (starts) when it fires; no delay resumes the process at once, as its
    Initialize would have. `Outcome.sim_events` counts one event where there were len(starts).
    """
    if not starts:
        return

    def start_all(event: simpy.Event) -> None:
        for gen, delay in starts:
            proc = Process.__new__(Process)      # Process.__init__ without its Initialize
            proc.env = env
            proc.callbacks = []
            proc._generator = gen
            if delay > 0.0:
                proc._target = timeout_with_callback(env, delay, proc._resume)
            else:
                proc._resume(event)              # what processing its Initialize would do

    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    ev.callbacks.append(start_all)  # type: ignore[union-attr]
    env.schedule(ev, URGENT)


def process_until_stop(env: simpy.Environment) -> int:
    """`while True: env.step()` until a callback raises StopSimulation; returns the number of
    events processed (the one that stopped the run included).

    The body of SimPy 4.1's `Environment.step()`, inlined: a run processes ~1000 events and the
    call was a measurable part of each. Unlike step(), the callbacks left after the one that
    raised StopSimulation are not rescheduled: nothing runs the environment after the stop.
    Raises EmptySchedule when no event is left; a failed event that nobody defused crashes the
    run as in step().
    """
    queue = env._queue  # type: ignore[attr-defined]
    n = 0
    try:
        while True:
            try:
                env._now, _, _, event = heappop(queue)  # type: ignore[attr-defined]
            except IndexError:
                raise EmptySchedule from None
            n += 1
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:  # type: ignore[union-attr]
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc
    except StopSimulation:
        return n

"""The only code of the model that touches SimPy's internals (pinned: simpy>=4.1.1,<4.2).

Two shortcuts save one trip through SimPy's event queue per run() completion and per lazy idle
check; neither changes what is computed (see timers.py). They rely on SimPy 4.1 internals:
- an `Event` triggers by setting its private `_ok` and `_value` and is processed by calling its
  `callbacks` list once and setting `callbacks` to None (what `Environment.step()` does);
- a process waiting on an event has exactly one callback, the bound method `Process._resume`;
- `Environment.schedule(event, priority, delay)` queues an already-triggered event.
tests/model/test_simpy_glue.py fails if any of these changes.
"""

from __future__ import annotations

from typing import Callable

import simpy
from simpy.events import Process

PROCESS_RESUME = Process._resume
LAZY_PRIORITY = 2   # SimPy priority after NORMAL (1): runs once everything else of the instant has


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

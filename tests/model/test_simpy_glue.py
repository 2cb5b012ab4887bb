"""SimPy internals the scheduler relies on (oommodel/sched/simpy_glue.py): fail loudly if they change.

The model pins simpy>=4.1.1,<4.2 in pyproject.toml; a newer SimPy that passes these tests may
be allowed by widening the pin.
"""

from __future__ import annotations

import inspect

import pytest
import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, PENDING, Process

from oommodel.sched.simpy_glue import (
    LAZY_PRIORITY,
    PROCESS_RESUME,
    FastClockEnvironment,
    fire_now,
    process_until_stop,
    resumes_one_process,
    schedule_lazy,
    start_processes,
    timeout_with_callback,
)


def test_event_private_fields_are_what_fire_now_sets() -> None:
    env = simpy.Environment()
    ev = simpy.Event(env)
    assert ev._value is PENDING and not ev.triggered
    ev._ok = True
    ev._value = None
    assert ev.triggered and ev.ok and ev.value is None


def test_a_waiting_process_has_exactly_one_callback_process_resume() -> None:
    env = simpy.Environment()
    ev = simpy.Event(env)

    def waiter():
        yield ev

    env.process(waiter())
    env.run()  # the process starts and waits on ev
    assert len(ev.callbacks) == 1
    assert ev.callbacks[0].__func__ is Process._resume is PROCESS_RESUME
    assert list(inspect.signature(Process._resume).parameters) == ["self", "event"]
    assert resumes_one_process(ev)
    ev.callbacks.append(lambda _e: None)
    assert not resumes_one_process(ev)
    assert not resumes_one_process(None)


def test_fire_now_resumes_the_process_in_place_with_value_none() -> None:
    env = simpy.Environment()
    ev = simpy.Event(env)
    got: list[object] = []

    def waiter():
        got.append((yield ev))
        got.append(env.now)

    env.process(waiter())
    env.run()
    fire_now(ev)
    assert got == [None, 0.0]
    assert ev.callbacks is None and ev.processed  # as Environment.step() leaves a processed event


def test_step_processes_callbacks_once_and_clears_them() -> None:
    env = simpy.Environment()
    ev = env.timeout(1.0)
    seen: list[object] = []
    ev.callbacks.append(lambda e: seen.append(e.callbacks))
    env.step()
    assert seen == [None] and ev.callbacks is None


def test_schedule_lazy_runs_after_every_normal_event_of_the_instant() -> None:
    env = simpy.Environment()
    assert NORMAL == 1 and LAZY_PRIORITY > NORMAL
    params = inspect.signature(simpy.Environment.schedule).parameters
    assert list(params) == ["self", "event", "priority", "delay"]
    order: list[str] = []
    env.timeout(0.0).callbacks.append(lambda _e: schedule_lazy(env, lambda _e: order.append("lazy")))
    env.timeout(0.0).callbacks.append(lambda _e: order.append("normal"))
    env.timeout(0.0).callbacks.append(lambda _e: env.timeout(0.0).callbacks.append(lambda _e: order.append("late")))
    env.run()
    assert order == ["normal", "late", "lazy"]


def test_run_until_machinery_used_by_counting_environment() -> None:
    # oommodel/kernel/world.py:CountingEnvironment drives step() itself with these.
    assert callable(StopSimulation.callback)
    env = simpy.Environment()
    try:
        env.step()
    except EmptySchedule:
        pass
    else:
        raise AssertionError("step() on an empty queue must raise EmptySchedule")


def _order_with(drive) -> tuple[list[tuple[float, str]], int]:
    env = simpy.Environment()
    order: list[tuple[float, str]] = []
    stop = env.event()

    def proc(name: str, dt: float):
        for _ in range(3):
            yield env.timeout(dt)
            order.append((env.now, name))

    env.process(proc("a", 1.0))
    env.process(proc("b", 1.5))
    env.timeout(0.0).callbacks.append(lambda _e: schedule_lazy(env, lambda _e: order.append((env.now, "lazy"))))
    env.timeout(4.0).callbacks.append(lambda _e: stop.succeed())
    stop.callbacks.append(StopSimulation.callback)
    return order, drive(env)


def test_process_until_stop_is_step_in_a_loop() -> None:
    """Same events in the same order as Environment.step(), counted up to the one that stops."""
    def by_step(env: simpy.Environment) -> int:
        n = 0
        try:
            while True:
                n += 1
                env.step()
        except StopSimulation:
            return n

    assert _order_with(process_until_stop) == _order_with(by_step)
    env = simpy.Environment()
    with pytest.raises(EmptySchedule):
        process_until_stop(env)
    env.timeout(1.0)
    (t, prio, eid, ev), = env._queue    # the heap entries process_until_stop pops
    assert t == 1.0 and ev.callbacks == []


def test_process_until_stop_crashes_on_an_undefused_failure() -> None:
    env = simpy.Environment()
    env.event().fail(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        process_until_stop(env)


def test_fast_clock_reads_what_environment_now_reads() -> None:
    env = FastClockEnvironment(initial_time=2.5)
    assert env.now == 2.5 == simpy.Environment.now.fget(env)
    seen: list[tuple[float, float]] = []
    for dt in (0.0, 1.25, 3.0):
        env.timeout(dt).callbacks.append(lambda _e: seen.append((env.now, simpy.Environment.now.fget(env))))
    env.run()
    assert seen == [(2.5, 2.5), (3.75, 3.75), (5.5, 5.5)]
    with pytest.raises(AttributeError):
        env.now = 1.0  # read-only, as SimPy's


def test_timeout_with_callback_queues_what_timeout_queues() -> None:
    """The same heap entry (time, NORMAL, next id, event) and the same event state as
    Timeout(env, delay) followed by callbacks.append(callback)."""
    def cb(_e: simpy.Event) -> None:
        pass

    a, b = simpy.Environment(), simpy.Environment()
    a.timeout(0.5)
    b.timeout(0.5)                                      # advance both id counters alike
    ref = a.timeout(1.5)
    ref.callbacks.append(cb)
    ev = timeout_with_callback(b, 1.5, cb)
    assert [e[:3] for e in a._queue] == [e[:3] for e in b._queue]
    assert a._queue[-1][1] == NORMAL and b._queue[-1][3] is ev
    assert type(ev) is type(ref) and ev.callbacks == ref.callbacks == [cb]
    assert vars(ev).keys() == vars(ref).keys()
    assert all(getattr(ev, k) == getattr(ref, k) for k in vars(ref) if k != "env")
    assert ev.env is b and ev.triggered and ev.ok and ev.value is None and not ev.processed
    got: list[float] = []
    ev.callbacks.append(lambda _e: got.append(b.now))
    b.run()
    assert got == [1.5] and ev.processed


def _starts_trace(use_glue: bool) -> tuple[list[tuple[float, str]], int]:
    """Threads started at 0 or later, with ties among them and with another process's timers."""
    env = simpy.Environment()
    order: list[tuple[float, str]] = []

    def body(name: str):
        order.append((env.now, f"{name} starts"))
        yield env.timeout(0.5)
        order.append((env.now, f"{name} after 0.5"))

    def life(name: str, delay: float):
        if delay > 0.0:
            yield env.timeout(delay)
        yield from body(name)

    def other():
        order.append((env.now, "other starts"))
        yield env.timeout(1.0)
        order.append((env.now, "other at 1.0"))

    starts = [("a", 1.0), ("b", 0.0), ("c", 0.5), ("d", 1.0), ("e", 0.0)]
    if use_glue:
        start_processes(env, [(body(n), d) for n, d in starts])
    else:
        for n, d in starts:
            env.process(life(n, d))
    env.process(other())
    env.timeout(1.0).callbacks.append(lambda _e: order.append((env.now, "timer at 1.0")))
    n = 0
    while env.peek() < float("inf"):
        env.step()
        n += 1
    return order, n


def test_start_processes_runs_what_env_process_runs_in_the_same_order() -> None:
    by_glue, n_glue = _starts_trace(True)
    by_simpy, n_simpy = _starts_trace(False)
    assert by_glue == by_simpy
    assert n_glue == n_simpy - 4          # one event for five Initialize events
    env = simpy.Environment()
    start_processes(env, [])              # nothing to start: no event
    assert env.peek() == float("inf")

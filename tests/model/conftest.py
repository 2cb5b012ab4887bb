"""Fixtures of the model tests."""

from __future__ import annotations

import pytest
import simpy
from simpy.events import NORMAL


class SchedulingCountingEnvironment(simpy.Environment):
    """Counts every event put on SimPy's queue (timers, succeeded events, process starts)."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0

    def schedule(self, event: simpy.Event, priority: int = NORMAL, delay: float = 0) -> None:  # type: ignore[override]
        self.scheduled += 1
        super().schedule(event, priority, delay)  # type: ignore[arg-type]


@pytest.fixture
def counting_env() -> SchedulingCountingEnvironment:
    return SchedulingCountingEnvironment()


@pytest.fixture
def make_counting_env() -> type[SchedulingCountingEnvironment]:
    return SchedulingCountingEnvironment

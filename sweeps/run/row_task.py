"""One row of a sweep as a Ray task sees it: the task (`RowTask`) and what computes it (`RowSimulator`).

Here, not in `sweeps.execution`, because computing a row is running oommodel: the executors only
run a callable over items and know nothing of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps.storage.schema import outcome_columns

__all__ = ["RowTask", "RowSimulator"]


@dataclass(frozen=True)
class RowTask:
    """One row to simulate: (cell, policy, replicate) with its derived seed."""

    cell_id: str
    cell_index: int
    policy: str  # PolicyChoice.label (partition value)
    policy_name: str
    policy_options: tuple[tuple[str, Any], ...]
    replicate: int
    seed: int
    scenario: dict[str, Any]

    def describe(self) -> str:
        return f"cell {self.cell_id} (index {self.cell_index}), policy {self.policy}, replicate {self.replicate}, seed {self.seed}"


class RowSimulator:
    """Callable run on workers: RowTask -> outcome columns.

    Parsed scenarios are cached per cell for the life of one batch (a fresh
    instance is unpickled per task), so a batch of one cell validates once.
    """

    def __init__(self) -> None:
        self._scenarios: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._scenarios = {}

    def __call__(self, task: RowTask) -> dict[str, Any]:
        from oommodel import Scenario, simulate  # in the worker, not at import: the driver may not need it

        sc = self._scenarios.get(task.cell_id)
        if sc is None:
            if len(self._scenarios) > 64:
                self._scenarios.clear()
            sc = self._scenarios[task.cell_id] = Scenario.from_dict(task.scenario)
        out = simulate(sc, task.policy_name, seed=task.seed, **dict(task.policy_options))
        return outcome_columns(out)

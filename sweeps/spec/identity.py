"""Identity of sweep cells and replicates.

A cell is named by the content of its scenario (plus the model version), never by its position in
the grid, so that adding a grid value, reordering keys or resuming on another machine finds the same
cells. Replicate seeds hang off that identity, so every policy meets the same draws (common random
numbers) whatever the batch, worker or order.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = ["canonical_json", "cell_id", "replicate_seed", "param_column"]

_INDEX = re.compile(r"\[(\d+)\]")


def canonical_json(obj: Any) -> str:
    """One JSON text per value: sorted keys, no whitespace, ASCII only, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def cell_id(scenario: dict, model_version: str) -> str:
    """sha256(canonical scenario JSON | model version), first 16 hex digits.

    A new model version gives new cell ids: results of an older model are never reused.
    """
    if not isinstance(model_version, str) or not model_version:
        raise ValueError("model_version must be a non-empty string")
    text = canonical_json(scenario) + "|" + model_version
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def replicate_seed(sweep_seed: int, cell_id: str, replicate: int) -> int:
    """Seed of one replicate of one cell, in [0, 2**63).

    Derived only from (sweep seed, cell id, replicate): the policy, batch, worker and execution
    order do not enter, so the policies of a cell are compared on identical random draws.
    """
    if isinstance(sweep_seed, bool) or not isinstance(sweep_seed, int):
        raise TypeError(f"sweep_seed must be an int, got {type(sweep_seed).__name__}")
    if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
        raise ValueError(f"replicate must be an int >= 0, got {replicate!r}")
    text = f"oomsweep.replicate|{sweep_seed}|{cell_id}|{replicate}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def param_column(key: str) -> str:
    """Column name of a scenario key path: "groups[0].sched.rt_priority" -> "groups.0.sched.rt_priority".

    Brackets are awkward in SQL (DuckDB) and in MLflow param names; dots are not.
    """
    return _INDEX.sub(r".\1", key)

"""The columns that say which row a result is: built in one place for sweep runs and calibration.

Resume, deduplication and the per-policy summaries key on these columns, so a sweep row and a
calibration row (sweeps.calibrate.command) must spell them the same way, down to the JSON of the
policy options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["identity_columns"]


def identity_columns(*, policy_name: str, policy_options: Mapping[str, Any], cell_id: str, cell_index: int,
                     replicate: int, seed: int, execution_id: str, model_version: str,
                     scenario_json: str) -> dict[str, Any]:
    """The key and provenance columns of one row, in the schema's order (outcome columns follow)."""
    return {
        "policy_name": policy_name,
        "policy_options": json.dumps(dict(policy_options), sort_keys=True, separators=(",", ":")),
        "cell_id": cell_id,
        "cell_index": cell_index,
        "replicate": replicate,
        "seed": seed,
        "execution_id": execution_id,
        "model_version": model_version,
        "scenario_json": scenario_json,
    }

"""The oommodel pieces that reach the command line: the policy registry and the model's input errors.

Here, in `spec`, so that `cli` does not import oommodel itself (only `spec`, `run` and `calibrate`
do), and because `sweeps.errors` must not import oommodel: `sweeps.execution` imports it.  Both are
imported on use, so that `import sweeps.cli` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def policy_registry() -> Mapping[str, Any]:
    """oommodel's policies by name (what a sweep file's `policies:` is checked against)."""
    from oommodel import POLICIES

    return POLICIES


def model_input_errors() -> tuple[type[Exception], ...]:
    """(ScenarioError, PolicyError): a scenario or policy option the model rejects is bad input (exit 2).

    Found outside the sweep file's validation too: `calibrate` reads a scenario file directly.
    """
    from oommodel import PolicyError, ScenarioError

    return (ScenarioError, PolicyError)

"""`simulate(scenario, policy, seed, **options) -> Outcome`: the model as a pure function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oommodel.kernel.world import World
from oommodel.outcome import Outcome
from oommodel.policies import get_policy
from oommodel.scenario import Scenario


def simulate(scenario: Scenario | Mapping[str, Any], policy: str, seed: int, **policy_options: Any) -> Outcome:
    """Run one scenario under one policy with one seed.

    Pure and deterministic: no I/O, no global state; the same arguments give the same
    Outcome in any process and any order. Random draws come from streams named after their
    purpose, so two policies with one seed meet the same start times, costs and injections
    (common random numbers). A simulated lockup is an Outcome, never an exception; a bad
    scenario raises ScenarioError and a bad policy or option PolicyError, before anything runs.
    """
    if not isinstance(scenario, Scenario):
        scenario = Scenario.from_dict(scenario)
    pol = get_policy(policy)
    opts = pol.check_options(policy_options)
    return World(scenario, pol, opts, seed).run()

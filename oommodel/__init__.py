"""oommodel: a discrete-event model of the Linux OOM killer, the oom_reaper and exit_mmap.

    from oommodel import Scenario, POLICIES, simulate
    sc = Scenario.from_yaml("configs/scenarios/handa-2018-11-14.yaml")
    out = simulate(sc, policy="handoff_rfc_v2", seed=7)

See oommodel/MODEL.md for how each mechanism maps to the kernel source.
"""

from oommodel.detector import AllocatorStallDetector
from oommodel.outcome import Outcome
from oommodel.policies import POLICIES, PolicyError, get_policy
from oommodel.scenario import Scenario, ScenarioError
from oommodel.simulate import simulate

MODEL_VERSION = "0.5.0"

__all__ = [
    "MODEL_VERSION",
    "POLICIES",
    "AllocatorStallDetector",
    "Outcome",
    "PolicyError",
    "Scenario",
    "ScenarioError",
    "get_policy",
    "simulate",
]

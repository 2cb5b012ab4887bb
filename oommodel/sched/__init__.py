"""Fluid CPU scheduler for the OOM model: RT > CFS > idle per CPU, RT throttling, placement.

See oommodel/sched/machine.py for the stated model and the module of each concern.
"""

from oommodel.sched.attrs import MachineSpec, SchedAttr, SchedPolicy
from oommodel.sched.machine import Machine, Thread
from oommodel.sched.weights import NICE_0_LOAD, SCHED_PRIO_TO_WEIGHT, WEIGHT_IDLEPRIO, nice_to_weight

__all__ = [
    "Machine",
    "MachineSpec",
    "NICE_0_LOAD",
    "SCHED_PRIO_TO_WEIGHT",
    "SchedAttr",
    "SchedPolicy",
    "Thread",
    "WEIGHT_IDLEPRIO",
    "nice_to_weight",
]

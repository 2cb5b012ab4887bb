"""The registry of policy variants: name -> `OomPolicy` (reference section 2, letters a–f)."""

from __future__ import annotations

import difflib
from types import MappingProxyType

from oommodel.policies import (
    direct_reap,
    handoff_oom_lock,
    handoff_rfc_v2,
    stall_backoff,
    timeout_backoff,
    upstream_4_19,
    upstream_5_10,
    upstream_6_1,
)
from oommodel.policies.base import ExitStep, Op, OomPolicy, Phase, PolicyError, ReaperKind

POLICIES: MappingProxyType[str, OomPolicy] = MappingProxyType({
    p.name: p
    for p in (
        upstream_4_19.POLICY,
        handoff_rfc_v2.POLICY,
        handoff_oom_lock.POLICY,
        timeout_backoff.POLICY,
        stall_backoff.POLICY,
        direct_reap.POLICY,
        upstream_5_10.POLICY,
        upstream_6_1.POLICY,
    )
})


def get_policy(name: str) -> OomPolicy:
    """The policy called `name`; PolicyError names the closest valid one."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), POLICIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PolicyError(f"unknown policy {name!r}{hint}; valid: {', '.join(POLICIES)}") from None


__all__ = ["POLICIES", "get_policy", "OomPolicy", "PolicyError", "ExitStep", "Op", "Phase", "ReaperKind"]

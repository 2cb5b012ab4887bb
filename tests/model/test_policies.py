"""Policy data: the exit steps an option selects, and what a policy may not declare."""

from __future__ import annotations

import dataclasses

import pytest

from oommodel import POLICIES, PolicyError
from oommodel.policies.base import Op
from oommodel.policies.handoff_rfc_v2 import EXIT_SKIP_AFTER_CLOSE, EXIT_SKIP_AFTER_PGTABLES


def test_the_skip_after_option_selects_its_exit_steps() -> None:
    pol = POLICIES["handoff_rfc_v2"]
    assert pol.steps_for(pol.check_options({})) == EXIT_SKIP_AFTER_PGTABLES
    assert pol.steps_for(pol.check_options({"skip_after": "close"})) == EXIT_SKIP_AFTER_CLOSE
    ops = [s.op for s in EXIT_SKIP_AFTER_CLOSE]
    assert ops[-1] is Op.SET_SKIP                          # after the remove_vma loop, as posted


def test_a_policy_without_variants_always_has_its_own_steps() -> None:
    pol = POLICIES["upstream_4_19"]
    assert pol.steps_for(pol.check_options({})) is pol.exit_steps


def test_two_options_selecting_exit_steps_are_refused_not_half_honoured() -> None:
    pol = POLICIES["handoff_rfc_v2"]
    with pytest.raises(PolicyError, match="at most one option"):
        dataclasses.replace(pol, options={**pol.options, "other": "a"},
                            option_variants={**pol.option_variants, "other": {"a": pol.exit_steps}})
    with pytest.raises(PolicyError, match="not an option"):
        dataclasses.replace(pol, options={}, option_variants=pol.option_variants)

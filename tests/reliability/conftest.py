"""Fixtures of the fault-injection tests (helpers live in rel_helpers.py)."""

from rel_helpers import run_cli  # noqa: F401  (fixture)

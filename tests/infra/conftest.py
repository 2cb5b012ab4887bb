"""Fixtures for tests/infra (helpers in infra_harness.py): private Ray clusters, sshd, marker cleanup."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from infra_harness import TINY, LocalRay, base_env, marked_pids


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: starts real Ray clusters / sshd / mlflow server on 127.0.0.1 (tests/infra)"
    )


@pytest.fixture
def marker() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def infra_env(marker: str) -> dict[str, str]:
    return base_env(marker)


@pytest.fixture
def local_ray(infra_env: dict[str, str], marker: str):
    """LocalRay(...) not started yet; whatever it (or anything with our marker) started is stopped after."""
    cluster = LocalRay(infra_env, marker)
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not marked_pids(marker), "processes of this test survived the cleanup"


@pytest.fixture
def tiny_sweep() -> Path:
    return TINY

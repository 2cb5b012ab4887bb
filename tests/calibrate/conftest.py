"""Shared helpers of the calibration tests; registers the `qemu` marker (a real boot under QEMU)."""

from __future__ import annotations


import pytest



def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "qemu: boots Debian's 6.1 kernel under QEMU (needs infra/qemu/ci-setup.sh)")

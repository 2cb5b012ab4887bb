"""Busy-loop processes beside a QEMU boot: a controlled host load for the boots' sensitivity to it.

Under TCG the guest's races (the oom_reaper's first look against a victim's exit_mmap()) run on
vCPU threads that the host schedules; how much of the host they get moves the outcome (on the
2-core host, Handa's reproducer under handoff_rfc_v2 hands over in fewer boots when the host is
idle). `kernels measure --host-hogs N` starts N such processes, at QEMU's own nice level, for each
boot, and records N in the row, so a load's effect is a reproducible command rather than whatever
else the machine was doing. Each boot's `host_share` column says what QEMU actually got.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_SPIN = "while True:\n    pass\n"


@contextmanager
def cpu_hogs(n: int) -> Iterator[None]:
    """Run `n` busy loops (one CPU each) for the duration of the block; killed on exit, even on error."""
    if n < 0:
        raise ValueError(f"--host-hogs: must be >= 0, got {n}")
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()

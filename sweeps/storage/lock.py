"""The sweep lock: one writer per sweep directory.

An exclusive, non-blocking flock on `output/sweep=<name>/.oomsweep.lock`: the kernel drops it when
the process dies, even by SIGKILL, so two runs of one sweep cannot write the same rows twice, a stale
lock never blocks a rerun, and the holder may safely delete the ``.tmp`` files a killed run left
behind (`sweeps.storage.dataset.clean_stale_tmp`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from sweeps.errors import StorageError
from sweeps.storage.dataset import sweep_dir

__all__ = ["LOCK_NAME", "SweepLock"]

LOCK_NAME = ".oomsweep.lock"


class SweepLock:
    """Exclusive, non-blocking flock on `output/sweep=<name>/.oomsweep.lock` for the life of a run.

    flock locks die with their process (also on SIGKILL), so a stale lock never
    blocks a rerun.  The file is dot-prefixed: readers never see it.
    """

    def __init__(self, output: str | Path, sweep: str) -> None:
        self.path = sweep_dir(output, sweep) / LOCK_NAME
        self.sweep = sweep
        self._fd: int | None = None

    def acquire(self) -> "SweepLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(
                    f"output: another oomsweep run is writing sweep {self.sweep!r} in {self.path.parent.parent}; "
                    f"wait for it to finish (two runs of one sweep would compute the same rows twice)"
                ) from None
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "SweepLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

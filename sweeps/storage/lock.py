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

from sweeps.errors import OutputError, StorageError
from sweeps.storage.dataset import list_files, sweep_dir

__all__ = ["LOCK_NAME", "SweepLock", "unusable_output_message"]

LOCK_NAME = ".oomsweep.lock"


def unusable_output_message(output: str | Path, sweep: str, error: OSError) -> str:
    """One line: which path, why, and (when the sweep there has rows) that it can still be read."""
    output = Path(output)
    blocker = next((p for p in (output, *output.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        cause = f"{blocker} is not a directory"
    else:
        cause = f"cannot write in {error.filename or output}: {error.strerror or error}"
    msg = f"output: {cause}; choose a writable directory with --output or `output:`"
    try:
        readable = bool(list_files(output, sweep))
    except OSError:
        readable = False
    if readable:
        msg += f" (the rows stored there can still be read: oomsweep report {output} --sweep {sweep})"
    return msg


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
        output = self.path.parent.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file in the way, a read-only file system, no permission: exit 2
            raise OutputError(unusable_output_message(output, self.sweep, e)) from None
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

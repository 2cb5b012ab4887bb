"""The errors oomsweep reports to its user, each with the exit code it ends the command with.

Why one module: the command line maps an error to its exit code by its class, never by the class's
name or by reading its message, so every module that raises one of these imports it from here, and
this module imports nothing of the project (any package may use it without a cycle).

- 2, `InputError` and its subclasses: the user's mistake (a sweep file, a flag, an output directory
  that holds another sweep).  Reported as one line that starts with the key path; no traceback.
- 1, `RunFailure` and its subclasses: the run itself failed (rows failed with --fail-fast, results
  could not be written, MLflow refused them).  One line, no traceback.
- 130, `Interrupted`: Ctrl-C or SIGTERM.
- Anything else is a bug of oomsweep: the command line lets it through as a traceback and exit 1.

The input errors stay `ValueError`s as well, as they were before this module existed, for callers
that catch that.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a C tool killed by SIGPIPE reports (`set -o pipefail`)


def one_line(message: object) -> str:
    """Control characters (a key named "\\x1e", a newline in a value) escaped: one message, one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(message))


class OomsweepError(Exception):
    """Base of the errors the command line reports as one line (never raised itself)."""

    exit_code = EXIT_FAILED
    label = "error"  # "oomsweep COMMAND: <label>: <message>"


# ------------------------------------------------------------------ exit 2: bad input


class InputError(OomsweepError, ValueError):
    """Bad input found before any work starts."""

    exit_code = EXIT_BAD_INPUT


class UsageError(InputError):
    """Bad command-line input: a flag's value, an unknown --sweep, an empty output directory."""


class SweepError(InputError):
    """An invalid sweep file. ``path`` is the offending key ("grid.machine.cpus", "" = the file)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class StorageError(InputError):
    """The output directory cannot be used for this sweep (a different seed is stored, another run holds it)."""


class OutputError(StorageError):
    """The output directory cannot be created, locked or written at all (a file, a read-only file
    system): the user's setting, found before any work. A write that fails mid-run is a
    StorageWriteError (exit 1)."""


class ConfirmationNeeded(InputError):
    """The grid is larger than --max-rows and --yes was not given."""


class UnknownColumn(InputError):
    """A key (`report --by`) that names no column of the stored rows."""


class CalibrationRefused(InputError):
    """The scenario uses a feature the reproducer cannot express on a stock kernel; `.path` names the key."""

    label = "refused"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class ReferenceError(InputError):  # noqa: A001 (the calibration reference dataset, not weakref's)
    """A malformed calibration reference dataset (sweeps.calibrate.reference); the message starts
    with the file and key."""


class QemuError(InputError, RuntimeError):
    """The QEMU harness (qemu, kernel image, initramfs) is missing or unusable on this machine.

    Exit 2: it is the machine's setup, fixed by the user (infra/qemu/README.md), not a failed run;
    a guest that fails during a run is recorded in its row instead.
    """


class RayAddressError(InputError):
    """--address (or RAY_ADDRESS) names a Ray cluster that cannot be joined."""


# ------------------------------------------------------------------ exit 1: the run failed


class RunFailure(OomsweepError, RuntimeError):
    """The run started and could not finish its work."""

    exit_code = EXIT_FAILED


class RowFailed(RunFailure):
    """A row raised (or ran out of its wall-clock budget) and fail-fast is on."""


class StorageWriteError(OomsweepError, OSError):
    """A result file could not be written (disk full, I/O error).  Nothing partial is left visible."""

    exit_code = EXIT_FAILED
    label = "error: cannot store results"


class TrackingError(RunFailure):
    """Logging to MLflow failed; the message says where (URI without credentials) and what."""

    label = "MLflow error"


class KernelLogError(RunFailure, ValueError):
    """A console log that does not hold one complete reproducer run (recorded in the row's `error`)."""


class KernelBootFailed(RunFailure):
    """A guest kernel that never started the reproducer (a panic at boot, a hang, a setup error):
    no run happened, so no row is written; the message names the step, the console's telling line
    and the log file. Boots before it in the same command keep their rows."""

    label = "kernel boot failed"


# ------------------------------------------------------------------ exit 130


class Interrupted(OomsweepError):
    """Ctrl-C or SIGTERM; the command line maps KeyboardInterrupt to it."""

    exit_code = EXIT_INTERRUPTED
    label = "interrupted"

"""An output that cannot be used: a file, /dev/null, a read-only file system (a real read-only bind
mount as root, a directory without write permission for an unprivileged uid otherwise).

Each is one line naming the path and the cause, exit 2, before any work; a complete sweep on a
read-only output can still be reported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sweeps.cli import main

from rel_helpers import handa_sweep

pytestmark = pytest.mark.timeout(180)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return code, cap.out, cap.err


def _one_error(argv: list[str], capsys) -> str:
    code, _, err = _run(argv, capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith(f"oomsweep {argv[0]}: error: output: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("target", ["a-file", "/dev/null", "a-file/below"])
def test_output_that_is_not_a_directory(target, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a directory\n")
    out = target if target.startswith("/") else str(tmp_path / target)
    path = handa_sweep(tmp_path, output=out)
    blocker = "/dev/null" if target == "/dev/null" else str(tmp_path / "a-file")
    for argv in (["run", str(path)], ["run", str(tmp_path / "other.yaml"), "--output", out]):
        if argv[1].endswith("other.yaml"):
            shutil.copy(path, argv[1])
        line = _one_error([*argv, "--serial", "--no-mlflow"], capsys)
        assert f"{blocker} is not a directory" in line, line
    assert (tmp_path / "a-file").read_text() == "not a directory\n"


@pytest.fixture
def read_only(tmp_path):
    """A directory that this process cannot write: a read-only bind mount as root (real EROFS),
    else a mode-0555 directory (real EACCES for a non-root user)."""
    ro = tmp_path / "ro"
    ro.mkdir()

    def seal() -> str:
        if os.geteuid() == 0:
            p = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, text=True)
            assert p.returncode == 0, f"mount --bind -o ro failed as root: {p.stderr}"
            return "Read-only file system"
        ro.chmod(0o555)
        return "Permission denied"

    yield ro, seal
    if os.geteuid() == 0:
        subprocess.run(["umount", str(ro)], capture_output=True)
    ro.chmod(0o755)


def test_read_only_output_new_and_complete_sweep(read_only, tmp_path, capsys):
    ro, seal = read_only
    done = ro / "done"
    path = handa_sweep(tmp_path, replicates=2, output=str(done))
    code, out, err = _run(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 0, err
    before = sorted(p.relative_to(done) for p in done.rglob("*"))
    cause = seal()

    # a new sweep there: nothing can be created
    new = handa_sweep(tmp_path, "fresh", output=str(ro / "new"))
    line = _one_error(["run", str(new), "--serial", "--no-mlflow"], capsys)
    assert f"cannot write in {ro / 'new'}: {cause}" in line, line

    # the complete sweep: the run cannot lock it, says so, and points at what still works
    line = _one_error(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert cause in line and str(done) in line and f"oomsweep report {done} --sweep rel" in line, line

    # ...which does: report, compare and verify read a read-only dataset
    code, out, err = _run(["report", str(done)], capsys)
    assert code == 0 and re.search(r"sweep rel: (.*: )?8 rows, ", out), (out, err)
    code, out, err = _run(["compare", str(done), "upstream_4_19", "timeout_backoff"], capsys)
    assert code == 0 and "over 4 paired" in out, (out, err)
    code, out, err = _run(["verify", str(done)], capsys)
    assert code == 0 and "8 rows: ok" in out, (out, err)
    assert sorted(p.relative_to(done) for p in done.rglob("*")) == before  # nothing was written

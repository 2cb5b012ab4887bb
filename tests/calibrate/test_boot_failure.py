"""A kernel that never starts the reproducer is an error naming the step and the log, never a row
(issue 14, "Bad input and failure"); boots before it keep their rows."""

from __future__ import annotations

from pathlib import Path

from sweeps.calibrate.kernel_log import boot_failure
from sweeps.storage import dataset as storage

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "configs" / "scenarios"
FIXTURES = Path(__file__).parent / "fixtures"
# A real 6.12 boot that panicked before the reproducer started (kept in the reference dataset).
PANIC_612 = (ROOT / "calibration" / "reference" / "kernel-6.12" / "logs"
             / "calibrate-idle-victim-no-throttling-stock-unchanged-pgtables-20261202T150547-run0.log")


def test_a_panic_at_boot_names_the_step_and_the_panic_line():
    assert boot_failure(PANIC_612.read_text(), timed_out=False) == (
        "step boot: Kernel panic - not syncing: Fatal exception in interrupt")


def test_a_reproducer_that_started_is_no_boot_failure():
    assert boot_failure((FIXTURES / "idle-victim-reaped.log").read_text(), timed_out=False) is None


def test_the_reproducers_own_setup_error_is_named():
    console = "[    1.000000] oomsweep: error cannot create /sys/fs/cgroup/oom: No space left on device\n"
    assert boot_failure(console, timed_out=False) == (
        "step reproducer setup: oomsweep: error cannot create /sys/fs/cgroup/oom: No space left on device")


def test_a_hang_before_the_start_says_the_limit_passed_and_shows_the_last_line():
    console = "[    0.500000] Booting the kernel.\n[    2.000000] Run /init as init process\n"
    why = boot_failure(console, timed_out=True)
    assert why.startswith("step boot: the wall-clock limit passed before the reproducer started")
    assert "Run /init as init process" in why


def test_calibrate_stops_at_a_failed_boot_and_keeps_the_boots_before_it(tmp_path, monkeypatch, oomsweep_cli):
    from sweeps.calibrate import qemu

    kernel = tmp_path / "vmlinuz-6.1.0-56-amd64"
    kernel.write_bytes(b"")
    (tmp_path / "config-6.1.0-56-amd64").write_text("CONFIG_HZ=250\n")
    consoles = [(FIXTURES / "idle-victim-reaped.log").read_text(), PANIC_612.read_text()]

    def fake_boot(kernel, initramfs, settings, *, cpus, cmdline, accelerator, limit_s, **kw):
        return qemu.Boot(consoles.pop(0), accelerator, 1.0, False, 0, ("qemu",))

    monkeypatch.setattr(qemu, "find_kernel", lambda path=None: kernel)
    monkeypatch.setattr(qemu, "base_initramfs", lambda: tmp_path / "base.cpio")
    monkeypatch.setattr(qemu, "choose_accelerator", lambda k, wanted="auto": "tcg")
    monkeypatch.setattr(qemu, "boot", fake_boot)
    ds = tmp_path / "ds"
    code, _, err = oomsweep_cli(["calibrate", str(SCENARIOS / "calibrate-idle-victim-no-throttling.yaml"),
                                 "--runs", "3", "--seeds", "1", "--output", str(ds), "--no-mlflow"])
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert "kernel boot failed: kernel 6.1.0-56-amd64: step boot: Kernel panic" in line, err
    assert line.endswith("-run1.log") and Path(line.rsplit("log ", 1)[1]).read_text() == PANIC_612.read_text()
    df = storage.read_sweep(ds, "calibrate-idle-victim-no-throttling")
    kernel_rows = df[df["source"] == "kernel"]
    assert list(kernel_rows["replicate"]) == [0] and list(kernel_rows["status"]) == ["ok"]
    assert consoles == []  # the third boot never ran

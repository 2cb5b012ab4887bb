"""Boot Debian's 6.1 kernel under QEMU with the calibration initramfs, under a hard wall-clock limit.

Why it is built this way:
- The kernel is a cached `dpkg -x` of `linux-image-6.1.0-NN-amd64` (infra/qemu/ci-setup.sh), never
  the host's /boot: the measurement must not depend on what the host runs.
- `/dev/kvm` can exist and hang (a paravirtual nested KVM on which Debian's kernel never printed a
  line), so KVM is used only after a short test boot printed the kernel banner; otherwise TCG.
  The probe result is cached per host boot, and every row records which accelerator ran.
- The per-run settings travel as a second cpio archive appended to the cached base initramfs; the
  kernel unpacks concatenated archives in order, so the base is built once.
- Every boot is a child process killed (its whole process group) at the wall-clock limit: a hung
  guest costs a bounded time and is reported as a timeout, never as a kernel outcome.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.errors import QemuError

INFRA = Path(__file__).resolve().parents[2] / "infra" / "qemu"
BANNER = b"Linux version "


@dataclass(frozen=True)
class Boot:
    """What one boot produced: the console text and how it ended."""

    console: str
    accelerator: str
    wall_s: float
    timed_out: bool
    returncode: int | None
    command: tuple[str, ...]
    # Host CPU seconds (user + system) QEMU used, and the host's CPU count: under TCG the guest's races
    # (the oom_reaper against the exit path) move with how much of the host its vCPU threads got.
    qemu_cpu_s: float | None = None
    host_cpus: int | None = None

    @property
    def host_share(self) -> float | None:
        """QEMU's CPU time over all the host's CPU time during the boot (1.0: it had the host alone)."""
        if self.qemu_cpu_s is None or not self.host_cpus or self.wall_s <= 0:
            return None
        return self.qemu_cpu_s / (self.wall_s * self.host_cpus)


def cache_dir() -> Path:
    return Path(os.environ.get("OOMSWEEP_KERNEL_CACHE", Path.home() / ".cache" / "oomsweep" / "kernel"))


def find_kernel(path: str | Path | None = None) -> Path:
    """The kernel image to boot: `path`, a stock kernel's name (infra/qemu/kernels), else the newest cached vmlinuz."""
    from sweeps.calibrate import stock_kernels

    if stock_kernels.is_name(path):
        return stock_kernels.image(str(path), cache_dir())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise QemuError(f"--kernel: {p} does not exist")
        return p
    found = sorted(cache_dir().glob("vmlinuz-*"))
    if not found:
        raise QemuError(f"no kernel in {cache_dir()}: run infra/qemu/ci-setup.sh (fetches linux-image-6.1.0-NN-amd64)")
    return found[-1]


def kernel_release(kernel: Path) -> str:
    return kernel.name.removeprefix("vmlinuz-")


def qemu_binary() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        raise QemuError("qemu-system-x86_64 not found: run infra/qemu/ci-setup.sh (apt-get install qemu-system-x86)")
    return exe


def base_initramfs() -> Path:
    """Build (or reuse) the base initramfs: static busybox, /init, static oomrepro."""
    out = cache_dir() / "initramfs-base.cpio"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([str(INFRA / "build-initramfs.sh"), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        raise QemuError(f"building the initramfs failed: {res.stderr.strip() or res.stdout.strip()}")
    return out


def newc_archive(files: dict[str, bytes]) -> bytes:
    """A cpio "newc" archive of regular files (mode 0644) at the root: the per-run settings."""
    out = bytearray()

    def entry(name: str, data: bytes, mode: int, ino: int) -> None:
        nm = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nm), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + nm)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for i, (name, data) in enumerate(sorted(files.items()), start=1):
        entry(name, data, 0o100644, i)
    entry("TRAILER!!!", b"", 0, 0)
    out.extend(b"\0" * (-len(out) % 512))
    return bytes(out)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(cmd: list[str], limit_s: float, stop_at: bytes | None = None) -> tuple[bytes, bool, int | None, float]:
    """Run `cmd` in its own process group; kill the group at `limit_s` (or once `stop_at` is seen)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buf = bytearray()
    timed_out = False
    try:
        while True:
            chunk = proc.stdout.read()
            if chunk:
                buf.extend(chunk)
                if stop_at is not None and stop_at in buf:
                    break
            elif proc.poll() is not None:
                rest = proc.stdout.read()
                if rest:
                    buf.extend(rest)
                break
            if time.monotonic() - start > limit_s:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return bytes(buf), timed_out, proc.returncode, time.monotonic() - start


def _probe_file() -> Path:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    return cache_dir() / f"accel-probe-{boot_id}.json"


def probe_kvm(kernel: Path, limit_s: float = 8.0) -> bool:
    """True when a KVM boot of `kernel` prints its banner within `limit_s` (cached per host boot)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cached = _probe_file()
    key = str(kernel.resolve())
    try:
        data = json.loads(cached.read_text())
        if key in data:
            return bool(data[key])
    except (OSError, ValueError):
        data = {}
    cmd = [qemu_binary(), "-accel", "kvm", "-nographic", "-no-reboot", "-smp", "1", "-m", "256",
           "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    out, _, _, _ = _run(cmd, limit_s, stop_at=BANNER)
    ok = BANNER in out
    data[key] = ok
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(data))
    return ok


def choose_accelerator(kernel: Path, wanted: str = "auto") -> str:
    """'kvm' or 'tcg': `wanted` if given, else KVM only if the probe boot worked."""
    if wanted in ("kvm", "tcg"):
        return wanted
    if wanted != "auto":
        raise QemuError(f"--accel: must be auto, kvm or tcg, got {wanted!r}")
    return "kvm" if probe_kvm(kernel) else "tcg"


def boot(kernel: Path, initramfs: Path, settings: dict[str, bytes], *, cpus: int, cmdline: str,
         accelerator: str, limit_s: float, memory_mb: int = 2048, workdir: Path | None = None,
         smp: str | None = None) -> Boot:
    """Boot once with `settings` appended to the initramfs; at most `limit_s` of wall clock.

    `smp` is QEMU's -smp value with the topology (ReproPlan.smp: "8,sockets=8,cores=1,threads=1");
    without it, plain `-smp cpus` (QEMU 7.2: one socket of `cpus` cores sharing the L3).
    """
    if smp is not None and int(smp.split(",", 1)[0]) != cpus:
        raise ValueError(f"-smp {smp} does not have {cpus} CPUs")
    workdir = workdir or cache_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = workdir / f".initrd-{os.getpid()}-{time.monotonic_ns()}.cpio"
    initrd.write_bytes(initramfs.read_bytes() + newc_archive(settings))
    cmd = [qemu_binary(), "-accel", accelerator, "-nographic", "-no-reboot", "-smp", smp or str(cpus),
           "-m", str(memory_mb), "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    if accelerator == "kvm":
        cmd += ["-cpu", "host"]
    # CPU time of the waited-for children: QEMU's own, as boots run one at a time in this process
    cpu_before = _children_cpu_s()
    try:
        out, timed_out, rc, wall = _run(cmd, limit_s)
    finally:
        initrd.unlink(missing_ok=True)
    return Boot(out.decode("utf-8", "replace"), accelerator, wall, timed_out, rc, tuple(cmd),
                qemu_cpu_s=round(_children_cpu_s() - cpu_before, 2), host_cpus=os.cpu_count())

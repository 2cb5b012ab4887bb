"""Debian's stock kernel images named in infra/qemu/kernels/NAME.env (e.g. `6.12`), fetched, not built.

Why it is built this way:
- `oomsweep calibrate --kernel 6.12` and `python -m sweeps.calibrate.kernels measure --kernel 6.12`
  name a kernel the way the patched 5.10 is named, but a stock image has no patch series, no
  `oomsweep.policy=` and no instruments: it runs what Debian ships. The definition pins the package,
  its version and its SHA256 (infra/qemu/fetch-kernel.sh checks it), so a row's kernel is exactly
  known; the image lives in the qemu cache under NAME/ (never /boot).
- The definition answers "is this name known?" without the image, so a typo is refused before any
  fetch or boot, and a known but unfetched name says which command fetches it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from sweeps.errors import QemuError

DEFS = Path(__file__).resolve().parents[2] / "infra" / "qemu" / "kernels"
FETCH_SH = DEFS.parent / "fetch-kernel.sh"
STOCK_POLICY = "stock"  # the kernel_policy column of a stock kernel's rows: whatever Debian ships


def defined() -> dict[str, dict[str, str]]:
    """NAME -> the variables of infra/qemu/kernels/NAME.env."""
    out = {}
    for f in sorted(DEFS.glob("*.env")):
        env: dict[str, str] = {}
        for line in f.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = " ".join(shlex.split(v))
        out[f.stem] = env
    return out


def is_name(value: str | Path | None) -> bool:
    """True if `value` names a stock kernel definition (not a path to an image)."""
    return bool(value) and "/" not in str(value) and str(value) in defined()


def image(name: str, cache: Path) -> Path:
    """The fetched vmlinuz of stock kernel NAME under the kernel cache directory `cache`
    (qemu.cache_dir(), passed in so that this module does not import qemu, which imports it);
    a clear error naming the fetch command if it is missing."""
    defs = defined()
    if name not in defs:
        raise QemuError(f"--kernel: unknown stock kernel {name!r} (infra/qemu/kernels: {', '.join(defs) or 'none'})")
    d = cache / name
    pinned = f"{defs[name]['PKG']}={defs[name]['VERSION']}"
    package = (d / "PACKAGE").read_text().strip() if (d / "PACKAGE").is_file() else ""
    found = sorted(d.glob("vmlinuz-*"))
    if not (d / ".complete").is_file() or package != pinned or not found:
        fetch = FETCH_SH.relative_to(DEFS.parents[2])
        raise QemuError(f"--kernel: {name} ({pinned}) is not fetched: run {fetch} {name}")
    return found[-1]


def softirq_of(release: str) -> str:
    """How a kernel release handles pending softirqs on irq exit (translate.KernelFacts.softirq).

    "softirq: Let ksoftirqd do its job" (4.9, commit 4cd13c21b207) leaves them to ksoftirqd once it
    is awake; 6.5 reverted it (commit d15121be7485): they run inline again.
    """
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        return "ksoftirqd_defer"
    version = (int(m.group(1)), int(m.group(2)))
    return "ksoftirqd_defer" if (4, 9) <= version < (6, 5) else "inline"

#!/usr/bin/env python3
"""Cut a recorded calibration console log down to the lines sweeps/calibrate/kernel_log.py reads.

Used to make the parser fixtures in tests/calibrate/fixtures/ from real boots:
    python3 infra/qemu/excerpt_log.py OUTPUT/calibrate-logs/<sweep>/<run>.log > tests/calibrate/fixtures/x.log
Kept: the harness's @@ lines, the dmesg markers, every "oomsweep:" line, the OOM killer's and the
reaper's lines, Handa's "Handed over" and "Gave up waiting for process" (stall_backoff,
direct_reap), RCU stall / hung task / RT throttling / panic lines, and the TIMER/RCU rows of the
/proc/softirqs dumps. Everything else (boot messages, memcg stats) is dropped.
"""

from __future__ import annotations

import re
import sys

KEEP = re.compile(
    r"^@@oomsweep|oomsweep: |Memory cgroup out of memory|invoked oom-killer|oom_reaper: |"
    r"Handed over|Gave up waiting for process|self-detected stall|detected stalls on CPUs|blocked for more than|"
    r"RT throttling activated|Kernel panic|"
    r"^--- /proc/softirqs|^\s+(TIMER|RCU):|^\s+CPU0"
)


def excerpt(text: str) -> str:
    out = []
    for ln in text.replace("\r", "").splitlines():
        if "@@oomsweep" in ln:
            ln = ln[ln.index("@@oomsweep"):]  # the first one shares its line with the BIOS' escape codes
        if KEEP.search(ln):
            out.append(ln.rstrip())
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(excerpt(open(sys.argv[1], errors="replace").read()))

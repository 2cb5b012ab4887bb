"""The calibration kernels built by infra/kernels/build.sh, and what their instruments print.

Why it is built this way:
- A kernel is named (`5.10-oomsweep`), not a path: its manifest (written by build.sh next to the
  image) says what it was built from and what it can do: CONFIG_HZ and the preemption model (fixed
  at build time on 5.10, which has no PREEMPT_DYNAMIC), the `oomsweep.policy=` values its patch
  series implements, its test instruments, and the patch set's hash that every row carries.
- A policy the kernel does not implement is refused before any boot (the kernel itself would only
  print "oomsweep: unknown parameter value" and run its default, which must never become a row).
  The definition file (infra/kernels/defs/NAME.env) answers that even before the kernel is built.
- The kernel's instruments are parsed here, not in the 6.1 parser: "Handed over N to exit path."
  (Handa's printk, one per handover the reaper made), "oomsweep: MMF_OOM_SKIP pid=N by=exit|reaper|
  timeout|direct|kill" (who set the flag on each victim, exactly; `direct`: an allocator under
  direct_reap, `timeout`: a deadline or a stall back-off) and "oomsweep: policy=..." (what the
  kernel ran).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sweeps.calibrate import stock_kernels
from sweeps.errors import InputError, KernelBootFailed

INFRA = Path(__file__).resolve().parents[2] / "infra" / "kernels"
BUILD_SH = INFRA / "build.sh"

_HANDED = re.compile(r"Handed over (\d+) to exit path\.")
_SKIP = re.compile(r"oomsweep: MMF_OOM_SKIP pid=(\d+) by=(\w+)")
_POLICY = re.compile(r"oomsweep: policy=(\S+) skip_after=(\S+) sched_at_handover=(\S+)")
_HANDOVER_POINT = re.compile(r"oomsweep: handover point pid=(\d+)")
_UNKNOWN = re.compile(r"oomsweep: unknown parameter value '([^']*)'")
_GAVE_UP = re.compile(r"Gave up waiting for process (\d+) ")  # Handa's stall back-off (stall_backoff, direct_reap)
_DIRECT = re.compile(r"oomsweep: direct reap pid=(\d+) by pid=(\d+)")
_LINE = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")

SCHED_AT_HANDOVER = ("unchanged", "idle")
SKIP_AFTER = ("pgtables", "close")


class KernelError(InputError):
    """A kernel name, policy or option the built kernels cannot serve (refused before booting)."""

    label = "refused"


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oomsweep" / "kernels"
    return Path(os.environ.get("OOMSWEEP_KERNELS_CACHE", default))


def defined() -> dict[str, dict[str, str]]:
    """NAME -> the variables of infra/kernels/defs/NAME.env (what build.sh would build)."""
    out = {}
    for f in sorted((INFRA / "defs").glob("*.env")):
        env: dict[str, str] = {}
        for line in f.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            env[k] = " ".join(shlex.split(v))
        out[f.stem] = env
    return out


@dataclass(frozen=True)
class KernelSpec:
    """A built kernel, from its manifest.json."""

    name: str
    image: Path
    release: str
    hz: int
    preempt: str  # "full" | "voluntary" | "none": CONFIG_PREEMPT*, what every boot runs
    preempt_dynamic: bool
    policies: tuple[str, ...]
    instruments: tuple[str, ...]
    patch_hash: str
    build_hash: str
    sched_features: str
    stock: bool = False  # a stock Debian image (infra/qemu/kernels): no policies, no instruments

    @property
    def default_policy(self) -> str:
        return self.policies[0] if self.policies else ""

    def check(self, policy: str | None, sched_at_handover: str = "unchanged", skip_after: str = "pgtables") -> str:
        """The policy to boot (default: the kernel's own); refuses what this kernel does not have."""
        policy = policy or self.default_policy
        if policy not in self.policies:
            stale = ""
            if policy in defined().get(self.name, {}).get("POLICIES", "").split():
                stale = f"; its definition has it: the build is older, run infra/kernels/build.sh {self.name}"
            raise KernelError(f"--kernel-policy: {self.name} has no policy {policy!r} "
                              f"(it has: {', '.join(self.policies)}){stale}")
        if sched_at_handover not in SCHED_AT_HANDOVER:
            raise KernelError(f"victim.sched_at_handover: {sched_at_handover!r} is not one of {SCHED_AT_HANDOVER}")
        if sched_at_handover != "unchanged" and "sched_at_handover" not in self.instruments:
            raise KernelError(f"victim.sched_at_handover: {self.name} has no oomsweep.sched_at_handover= hack")
        if skip_after not in SKIP_AFTER:
            raise KernelError(f"skip_after: {skip_after!r} is not one of {SKIP_AFTER}")
        if skip_after != "pgtables" and policy != "handoff_rfc_v2":
            raise KernelError(f"skip_after: {skip_after!r} applies to handoff_rfc_v2 only (policy {policy!r})")
        return policy

    def cmdline_extra(self, policy: str, sched_at_handover: str = "unchanged", skip_after: str = "pgtables") -> str:
        """The boot parameters that select the policy and the instruments (none on a stock kernel)."""
        if self.stock:
            return ""
        return (f"oomsweep.policy={policy} oomsweep.skip_after={skip_after} "
                f"oomsweep.sched_at_handover={sched_at_handover}")


def load(name: str) -> KernelSpec:
    """The built kernel NAME (cache_dir()/NAME/manifest.json); a clear error if it is not built."""
    defs = defined()
    if name not in defs and stock_kernels.is_name(name):
        return load_stock(name)
    if name not in defs:
        raise KernelError(f"--kernel: unknown kernel {name!r} (defined in infra/kernels/defs: "
                          f"{', '.join(defs) or 'none'}; stock images in infra/qemu/kernels: "
                          f"{', '.join(stock_kernels.defined()) or 'none'})")
    manifest = cache_dir() / name / "manifest.json"
    if not manifest.is_file():
        raise KernelError(f"--kernel: {name} is not built: run infra/kernels/build.sh {name} "
                          f"(or `oomsweep kernels build {name}`)")
    m = json.loads(manifest.read_text())
    return KernelSpec(
        name=m["name"], image=Path(m["image"]), release=m["kernel_release"], hz=int(m["hz"]),
        preempt=m["preempt"], preempt_dynamic=bool(m.get("preempt_dynamic")), policies=tuple(m["policies"]),
        instruments=tuple(m.get("instruments", ())), patch_hash=m.get("patch_hash", ""),
        build_hash=m.get("build_hash", ""), sched_features=m.get("sched_features", ""),
    )


def load_stock(name: str) -> KernelSpec:
    """A fetched stock image (infra/qemu/fetch-kernel.sh NAME) as a KernelSpec: HZ and preemption from its config."""
    from sweeps.calibrate.qemu import cache_dir, kernel_release
    from sweeps.errors import QemuError

    try:
        image = stock_kernels.image(name, cache_dir())
    except QemuError as exc:
        raise KernelError(str(exc)) from None
    release = kernel_release(image)
    config = (image.parent / f"config-{release}").read_text(errors="replace")
    hz = int(m.group(1)) if (m := re.search(r"^CONFIG_HZ=(\d+)$", config, re.M)) else 250
    preempt = next((p for opt, p in (("CONFIG_PREEMPT", "full"), ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"))
                    if re.search(rf"^{opt}=y$", config, re.M)), "none")
    pkg = (image.parent / "PACKAGE").read_text().strip()
    return KernelSpec(name=name, image=image, release=release, hz=hz, preempt=preempt,
                      preempt_dynamic=bool(re.search(r"^CONFIG_PREEMPT_DYNAMIC=y$", config, re.M)),
                      policies=(stock_kernels.STOCK_POLICY,), instruments=(), patch_hash="", build_hash=pkg,
                      sched_features="", stock=True)


def is_name(value: str | None) -> bool:
    """True if `value` names a kernel of infra/kernels/defs (not a path to an image)."""
    return bool(value) and "/" not in str(value) and str(value) in defined()


def match_scenario(scenario: dict, spec: KernelSpec) -> tuple[dict, list[str]]:
    """--match-kernel for a built kernel: machine.hz, machine.softirq and (no PREEMPT_DYNAMIC) machine.preempt."""
    from sweeps.calibrate.translate import KernelFacts, match_kernel

    sc, changes = match_kernel(scenario, KernelFacts(spec.release, spec.hz, stock_kernels.softirq_of(spec.release)))
    if not spec.preempt_dynamic and sc["machine"].get("preempt") != spec.preempt:
        changes.append(f"machine.preempt: {sc['machine'].get('preempt')!r} -> {spec.preempt!r}")
        sc["machine"]["preempt"] = spec.preempt
    return sc, changes


def policies_of(name: str) -> tuple[str, ...]:
    """The policies NAME implements, from its definition (no build needed)."""
    defs = defined()
    if name not in defs:
        raise KernelError(f"--kernel: unknown kernel {name!r} (defined: {', '.join(defs) or 'none'})")
    return tuple(defs[name].get("POLICIES", "").split())


def build(names: list[str] | None = None, *, stream=None) -> int:
    """Run infra/kernels/build.sh (all kernels, or `names`); its output goes to `stream`'s fd if given."""
    cmd = [str(BUILD_SH)] + list(names or [])
    return subprocess.run(cmd).returncode


@dataclass(frozen=True)
class Instruments:
    """What the patched kernel's own printks say about one boot (times: printk seconds)."""

    policy: str                                 # from "oomsweep: policy=" ("" if the kernel printed none)
    skip_after: str
    sched_at_handover: str
    unknown: tuple[str, ...]                    # values the kernel did not know
    handed_over: tuple[tuple[float, int], ...]  # (t, pid) of "Handed over N to exit path."
    skip_by: dict[int, tuple[float, str]]       # pid -> (t, "exit" | "reaper" | "timeout" | "direct" | "kill")
    handover_points: dict[int, float]           # pid -> t the victim's exit path reached the handover point
    gave_up: tuple[tuple[float, int], ...] = ()  # (t, pid) of "Gave up waiting for process N" (a stall back-off)
    direct_reaps: tuple[tuple[float, int], ...] = ()  # (t, victim pid) of "oomsweep: direct reap pid=N by pid=M"

    @property
    def handovers(self) -> int:
        return len(self.handed_over)


def parse_instruments(console: str) -> Instruments:
    text = console.replace("\r", "")
    if "@@oomsweep-dmesg-begin" in text:  # the whole kernel log, printed by /init at the end
        text = text.split("@@oomsweep-dmesg-begin", 1)[1].split("@@oomsweep-dmesg-end", 1)[0]
    policy = skip_after = sched = ""
    unknown: list[str] = []
    handed: list[tuple[float, int]] = []
    skip: dict[int, tuple[float, str]] = {}
    points: dict[int, float] = {}
    gave_up: list[tuple[float, int]] = []
    direct: list[tuple[float, int]] = []
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        t, msg = float(m.group(1)), m.group(2)
        if mm := _HANDED.search(msg):
            handed.append((t, int(mm.group(1))))
        elif mm := _SKIP.search(msg):
            skip.setdefault(int(mm.group(1)), (t, mm.group(2)))
        elif mm := _GAVE_UP.search(msg):
            gave_up.append((t, int(mm.group(1))))
        elif mm := _DIRECT.search(msg):
            direct.append((t, int(mm.group(1))))
        elif mm := _HANDOVER_POINT.search(msg):
            points.setdefault(int(mm.group(1)), t)
        elif mm := _POLICY.search(msg):
            policy, skip_after, sched = mm.group(1), mm.group(2), mm.group(3)
        elif mm := _UNKNOWN.search(msg):
            unknown.append(mm.group(1))
    return Instruments(policy, skip_after, sched, tuple(dict.fromkeys(unknown)), tuple(dict.fromkeys(handed)),
                       skip, points, tuple(dict.fromkeys(gave_up)), tuple(dict.fromkeys(direct)))


# --------------------------------------------------------------------------------------------------
# Measuring a scenario on a patched kernel (the reference datasets of calibration/reference/).

_KILLED = re.compile(r"Killed process (\d+) ")


def boot_plan(scenario: dict, spec: KernelSpec, policy: str | None, *, skip_after: str = "pgtables",
              seed: int = 0, match: bool = False):
    """(plan, cmdline, policy, sched_at_handover) for one boot of `scenario` on `spec`; refuses before booting.

    The scenario's victim.sched_at_handover becomes the kernel's oomsweep.sched_at_handover= (the
    6.1 translation refuses anything but "unchanged": the stock kernel has no hack); machine.preempt
    must be the kernel's preemption model, and machine.hz its CONFIG_HZ.
    """
    import dataclasses

    from sweeps.calibrate.translate import KernelFacts, translate
    from sweeps.errors import CalibrationRefused

    facts = KernelFacts(spec.release, spec.hz, stock_kernels.softirq_of(spec.release))
    if match:  # --match-kernel: machine.hz, machine.softirq (and machine.preempt) become the kernel's
        scenario, _ = match_scenario(scenario, spec)
    sched = scenario["victim"]["sched_at_handover"]
    policy = spec.check(policy, sched, skip_after)
    if not spec.preempt_dynamic and scenario["machine"]["preempt"] != spec.preempt:
        raise CalibrationRefused("machine.preempt", f"{scenario['machine']['preempt']!r}: {spec.name} is built with "
                                 f"preemption model {spec.preempt!r} (no PREEMPT_DYNAMIC on this kernel)")
    sc = json.loads(json.dumps(scenario))
    sc["victim"]["sched_at_handover"] = "unchanged"  # the kernel does it: oomsweep.sched_at_handover=
    plan = translate(sc, facts, seed)
    sysctls = tuple((spec.sched_features if p == "/sys/kernel/debug/sched/features" and spec.sched_features else p, v)
                    for p, v in plan.sysctls)
    plan = dataclasses.replace(plan, sysctls=sysctls)
    cmdline = plan.cmdline() + " " + spec.cmdline_extra(policy, sched, skip_after)
    return plan, cmdline, policy, sched


_REAPED = re.compile(r"oom_reaper: reaped process (\d+)")
_KSOFTIRQD = re.compile(r"oomsweep: task comm=ksoftirqd/(\d+) pid=\d+ state=(\S+)")


def softirq_columns(console: str) -> dict:
    """What the watchdog's stall dump says about softirqs (empty without a stall declaration).

    timer_frozen_cpus: CPUs whose TIMER count in /proc/softirqs did not move over the dump's 1 s
    (their expired timers, the reaper's 2 s timer among them, wait for a starved ksoftirqd);
    ksoftirqd_runnable: CPUs whose ksoftirqd/N was runnable (state R) but not running then.
    """
    text = console.replace("\r", "")
    timers = [[int(x) for x in line.split()[1:]] for line in text.splitlines()
              if line.strip().startswith("TIMER:")]
    frozen = ""
    if len(timers) >= 2 and len(timers[0]) == len(timers[1]):
        frozen = " ".join(str(cpu) for cpu, (a, b) in enumerate(zip(timers[0], timers[1])) if a == b)
    runnable = " ".join(m.group(1) for m in _KSOFTIRQD.finditer(text) if m.group(2) == "R")
    # an idle NOHZ CPU's TIMER count stands still too: starved = frozen while its ksoftirqd waits to run
    starved = " ".join(c for c in frozen.split() if c in runnable.split())
    return {"timer_frozen_cpus": frozen, "ksoftirqd_runnable": runnable, "ksoftirqd_starved_cpus": starved}


def stock_columns(console: str, spec: KernelSpec) -> dict:
    """A stock kernel's row: no instruments, so MMF_OOM_SKIP is "reaper" for a victim the reaper reaped.

    "oom_reaper: reaped process N" is printed only when the reaper found MMF_OOM_SKIP unset and set it
    (as the 6.1 parser reads it, sweeps/calibrate/kernel_log.py); every other victim's flag was set by
    its own exit_mmap(). kill_to_reap_s: kill -> reap per reaped victim (printk clock).
    """
    text = console.replace("\r", "")
    if "@@oomsweep-dmesg-begin" in text:
        text = text.split("@@oomsweep-dmesg-begin", 1)[1]
    kills: dict[int, float] = {}
    reaped: dict[int, float] = {}
    stall_at = math.inf
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        t, msg = float(m.group(1)), m.group(2)
        if k := _KILLED.search(msg):
            kills.setdefault(int(k.group(1)), t)
        elif r := _REAPED.search(msg):
            reaped.setdefault(int(r.group(1)), t)
        elif msg.startswith("oomsweep: stall t=") and stall_at == math.inf:
            stall_at = t
    by = ["reaper" if p in reaped else "exit" for p in sorted(kills, key=kills.get)]
    return {
        "kernel": spec.name, "kernel_release": spec.release, "patch_hash": spec.patch_hash,
        "kernel_policy": stock_kernels.STOCK_POLICY, "sched_at_handover": "unchanged", "skip_after": "pgtables",
        "handovers": 0, "kills_before_stall": sum(1 for t in kills.values() if t < stall_at),
        "handovers_before_stall": 0, "handed_over": False, "handover_pids": "", "kill_to_handover_s": "",
        "skip_by_first": by[0] if by else "none", "skip_by_exit": by.count("exit"),
        "skip_by_reaper": by.count("reaper"), "skip_by_timeout": 0, "handover_points": 0, "instrument_errors": "",
        "kill_to_reap_s": " ".join(f"{reaped[p] - t:.3f}" for p, t in kills.items() if p in reaped),
        # reaps once the watchdog's stall declaration had freed the CPU (the timer could fire only then)
        "reaped_after_stall": sum(1 for t in reaped.values() if t >= stall_at),
        "package": spec.build_hash,
    }


def kernel_columns(console: str, spec: KernelSpec, policy: str, sched: str, skip_after: str) -> dict:
    """The handover columns of a kernel row, from the patched kernel's instruments (a stock kernel's: stock_columns)."""
    if spec.stock:
        return {**stock_columns(console, spec), **softirq_columns(console)}
    ins = parse_instruments(console)
    text = console.replace("\r", "")
    if "@@oomsweep-dmesg-begin" in text:
        text = text.split("@@oomsweep-dmesg-begin", 1)[1]
    kills: dict[int, float] = {}
    stall_at = math.inf  # the watchdog's stall declaration: after it, it kills the children itself
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if m and (k := _KILLED.search(m.group(2))):
            kills.setdefault(int(k.group(1)), float(m.group(1)))
        elif m and m.group(2).startswith("oomsweep: stall t=") and stall_at == math.inf:
            stall_at = float(m.group(1))
    errors = []
    if ins.unknown:
        errors.append(f"the kernel did not know {', '.join(ins.unknown)}")
    if ins.policy and (ins.policy, ins.sched_at_handover) != (policy, sched):
        errors.append(f"the kernel ran policy={ins.policy} sched_at_handover={ins.sched_at_handover}, "
                      f"not {policy}/{sched}")
    if not ins.policy:
        errors.append("no 'oomsweep: policy=' line: not an oomsweep kernel, or the log was cut")
    to_handover = [t - kills[p] for t, p in ins.handed_over if p in kills]
    to_give_up = [t - kills[p] for t, p in ins.gave_up if p in kills]
    by = [ins.skip_by[p][1] for p in sorted(kills, key=kills.get) if p in ins.skip_by]
    return {
        "kernel": spec.name,
        "kernel_release": spec.release,
        "patch_hash": spec.patch_hash,
        "kernel_policy": policy,
        "sched_at_handover": sched,
        "skip_after": skip_after,
        "handovers": ins.handovers,
        "kills_before_stall": sum(1 for t in kills.values() if t < stall_at),
        "handovers_before_stall": sum(1 for t, _ in ins.handed_over if t < stall_at),
        "handed_over": ins.handovers > 0,
        "handover_pids": " ".join(str(p) for _, p in ins.handed_over),
        "kill_to_handover_s": " ".join(f"{d:.3f}" for d in to_handover),
        "skip_by_first": by[0] if by else "none",
        "skip_by_exit": by.count("exit"),
        "skip_by_reaper": by.count("reaper"),
        "skip_by_timeout": by.count("timeout"),
        "skip_by_direct": by.count("direct"),
        "stall_give_ups": len(ins.gave_up),
        "kill_to_give_up_s": " ".join(f"{d:.3f}" for d in to_give_up),
        "direct_reaps": len(ins.direct_reaps),
        "handover_points": len(ins.handover_points),
        "instrument_errors": "; ".join(errors),
    }


def measure(scenario_path: str | Path, kernel: str, policy: str | None, runs: int, out_dir: str | Path, *,
            skip_after: str = "pgtables", accel: str = "auto", seed: int = 0, sched_at_handover: str | None = None,
            boot_timeout: float | None = None, match: bool = False, settings: tuple[tuple[str, str], ...] = (),
            topology: str | None = None, host_hogs: int = 0, say=print) -> list[dict]:
    """Boot `kernel` `runs` times on a scenario; rows (with console excerpts) go to OUT/runs.csv and OUT/logs/.

    The stand-alone driver of the reference datasets; `oomsweep calibrate --kernel` is the
    dataset-writing path. Row columns: the 6.1 parser's outcome (lockup, kills, stall) plus the
    instruments' handover columns. `topology` overrides the scenario's machine.topology (the
    QEMU -smp topology follows it). `host_hogs` busy loops run beside each boot (host_load.py says
    why); the row records them and QEMU's share of the host CPU. `settings` are extra (PATH, VALUE) writes /init makes after the
    scenario's own (e.g. 6.12's fair server runtime); a failed write makes the row an error.
    """
    import csv
    import shlex as _shlex
    import sys
    import time

    from oommodel import Scenario

    from sweeps.calibrate import qemu
    from sweeps.calibrate.host_load import cpu_hogs
    from sweeps.calibrate.kernel_log import KernelLogError, boot_failure, parse_run

    sys.path.insert(0, str(INFRA.parent / "qemu"))
    from excerpt_log import excerpt  # type: ignore[import-not-found]

    spec = load(kernel)
    scenario = Scenario.from_yaml(Path(scenario_path)).to_dict()
    if sched_at_handover is not None:
        scenario["victim"]["sched_at_handover"] = sched_at_handover
    if topology is not None:
        scenario["machine"]["topology"] = topology
    plan, cmdline, policy, sched = boot_plan(scenario, spec, policy, skip_after=skip_after, seed=seed, match=match)
    accelerator = qemu.choose_accelerator(spec.image, accel)
    out = Path(out_dir)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    base = qemu.base_initramfs()
    limit = boot_timeout or 60.0 + 2.0 * plan.horizon_s
    rows = []
    for i in range(runs):
        run_plan, cmdline, _, _ = boot_plan(scenario, spec, policy, skip_after=skip_after, seed=seed + i,
                                         match=match)
        if settings:
            import dataclasses

            run_plan = dataclasses.replace(run_plan, sysctls=tuple(run_plan.sysctls) + tuple(settings))
        with cpu_hogs(host_hogs):
            b = qemu.boot(spec.image, base, {"oomrepro.conf": run_plan.conf_text(i).encode()},
                          cpus=run_plan.cpus, smp=run_plan.smp, cmdline=cmdline, accelerator=accelerator,
                          limit_s=limit)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        tag = f"{Path(scenario_path).stem}-{policy}-{sched}-{skip_after}-{stamp}-run{i}"
        if why := boot_failure(b.console, b.timed_out):  # no run happened: an error, never a row
            failed = out / "logs" / f"{tag}.failed.log"
            failed.write_text(b.console)
            raise KernelBootFailed(f"kernel {spec.release}: {why}; log {failed}")
        (out / "logs" / f"{tag}.log").write_text(excerpt(b.console))
        row = {"scenario": Path(scenario_path).name, "run": i, "seed": seed + i, "accelerator": accelerator,
               "wall_s": round(b.wall_s, 1), "status": "ok", "error": "",
               "extra_settings": " ".join(f"{path}={value}" for path, value in settings),
               "host_cpus": b.host_cpus, "host_hogs": host_hogs, "qemu_cpu_s": b.qemu_cpu_s,
               "host_share": round(b.host_share, 3) if b.host_share is not None else ""}
        row.update(kernel_columns(b.console, spec, policy, sched, skip_after))
        try:
            r = parse_run(b.console, plan.groups)
            o = r.outcome
            row.update({"lockup": bool(o["lockup"]), "lockup_reason": o["lockup_reason"], "kills": o["kills"],
                        "max_stall_s": round(o["max_stall_s"], 3), "rcu_stalls": r.rcu_stalls,
                        "hung_tasks": r.hung_tasks, "rt_throttled": r.rt_throttled, "end_reason": r.end_reason})
            if r.errors:
                row.update(status="error", error="; ".join(r.errors))
            elif r.settings_failed:
                row.update(status="error", error="kernel settings failed: " + ", ".join(r.settings_failed))
            elif b.timed_out and not r.end_reason:
                row.update(status="timeout", error=f"boot exceeded {limit:.0f} s")
        except KernelLogError as exc:
            row.update(status="timeout" if b.timed_out else "error", error=str(exc))
        if row["instrument_errors"] and row["status"] == "ok":
            row.update(status="error", error=row["instrument_errors"])
        row["log"] = f"logs/{tag}.log"
        row["command"] = " ".join(_shlex.quote(c) for c in b.command)
        rows.append(row)
        say(f"boot {i + 1}/{runs} {policy} sched_at_handover={sched} skip_after={skip_after}: {row['status']} "
            f"lockup={row.get('lockup')} kills={row.get('kills')} handovers={row['handovers']} "
            f"skip_by_first={row['skip_by_first']} kill->handover={row['kill_to_handover_s'] or '-'} "
            f"wall {b.wall_s:.0f} s host share {row['host_share'] or '-'} {row['error']}")
        _append_row(out / "runs.csv", row)
    return rows


def _append_row(path: Path, row: dict) -> None:
    """Append `row` to a runs.csv; a column the file lacks widens the header (older rows leave it empty)."""
    import csv

    if not path.exists():
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            w.writeheader()
            w.writerow(row)
        return
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or ())
        missing = [k for k in row if k not in fields]
        old_rows = list(reader) if missing else []
    if missing:
        _rewrite_csv(path, fields + missing, [*old_rows, row])
        return
    with path.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields).writerow(row)


def _wilson(k: int, n: int):
    from sweeps.analysis.stats import wilson

    return wilson(k, n)


def boot_topology(command: str) -> str:
    """The CPU topology a boot's QEMU command line presented: `-smp N,sockets=N,cores=1` is
    core_per_socket, `-smp N,sockets=1,cores=N` and a plain `-smp N` (QEMU 7.2: one socket, one
    shared L3) are shared_llc; anything else is shown as its -smp value. Boots of different
    topologies are never pooled in one table row."""
    import re

    m = re.search(r"-smp\s+(\S+)", command)
    if not m:
        return "?"
    smp = m.group(1)
    opts = dict(o.split("=", 1) for o in smp.split(",")[1:] if "=" in o)
    if not opts or (opts.get("sockets") == "1"):
        return "shared_llc"
    if opts.get("cores") == "1" and opts.get("threads", "1") == "1":
        return "core_per_socket"
    return f"-smp {smp}"


def summarize(csv_path: str | Path) -> str:
    """The reference table of a runs.csv: one line per (scenario, policy, sched_at_handover, skip_after).

    n counts boots with status ok; lockups with a Wilson 95 % interval; handovers per kill over all
    kills of those boots; who set MMF_OOM_SKIP over all victims (the kernel's own printk); kill ->
    handover times (median and max, s, printk clock). A stock kernel's runs.csv (it has the
    softirq columns) adds the boots whose stall dump showed a starved ksoftirqd, and kill -> reap.
    A runs.csv with the host columns (`measure` since 2026-12-02) keeps boots with different
    `--host-hogs` apart and adds QEMU's share of the host CPU (median, min-max over the row's boots).
    """
    import csv
    import statistics

    groups: dict[tuple, list[dict]] = {}
    with Path(csv_path).open() as fh:
        reader = csv.DictReader(fh)
        softirq = "ksoftirqd_starved_cpus" in (reader.fieldnames or ())
        host = "host_share" in (reader.fieldnames or ())
        for r in reader:
            key = (r["scenario"], r["kernel_policy"], r["sched_at_handover"], r["skip_after"], r["accelerator"],
                   boot_topology(r.get("command") or ""))
            if host:
                key += (r.get("host_hogs") or "-",)
            groups.setdefault(key, []).append(r)
    head = ["scenario", "policy", "sched_at_handover", "skip_after", "accel", "topology"]
    if host:
        head += ["host hogs"]
    head += ["boots", "not ok", "lockups",
            "P(lockup) [95% CI]", "kills*", "handovers*", "handovers/kill*", "MMF_OOM_SKIP by (victims)",
            "kill->handover median/max"]
    if softirq:
        head += ["ksoftirqd starved (boots)", "kill->reap median/max"]
    if host:
        head += ["host share median (min-max)"]
    rows = [head]
    for key, rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == "ok"]
        n, k = len(ok), sum(r["lockup"] == "True" for r in ok)
        # kills and handovers before the watchdog's stall declaration (it kills the children itself after)
        kills = sum(int(r.get("kills_before_stall") or r["kills"] or 0) for r in ok)
        hand = sum(int(r.get("handovers_before_stall") or r["handovers"] or 0) for r in ok)
        by_exit = sum(int(r["skip_by_exit"] or 0) for r in ok)
        by_reaper = sum(int(r["skip_by_reaper"] or 0) for r in ok)
        by_timeout = sum(int(r.get("skip_by_timeout") or 0) for r in ok)
        by_direct = sum(int(r.get("skip_by_direct") or 0) for r in ok)
        gave_up = sum(int(r.get("stall_give_ups") or 0) for r in ok)
        k2g = [float(x) for r in ok for x in (r.get("kill_to_give_up_s") or "").split()]
        k2h = [float(x) for r in ok for x in r["kill_to_handover_s"].split()]
        ci = _wilson(k, n) if n else None
        rows.append([
            *key, str(n), str(len(rs) - n), str(k),
            f"{ci.p:.2f} [{ci.low:.2f}, {ci.high:.2f}]" if ci else "-", str(kills), str(hand),
            f"{hand / kills:.3f}" if kills else "-",
            f"exit {by_exit}, reaper {by_reaper}" + (f", timeout {by_timeout}" if by_timeout else "")
            + (f", direct {by_direct}" if by_direct else "") + (f"; gave up {gave_up}" if gave_up else "")
            + (f" ({min(k2g):.0f}-{max(k2g):.0f} s after the kill)" if k2g else ""),
            f"{statistics.median(k2h):.3f} / {max(k2h):.3f} s" if k2h else "-",
        ])
        if softirq:
            k2r = [float(x) for r in ok for x in r["kill_to_reap_s"].split()]
            after = sum(int(r["reaped_after_stall"] or 0) for r in ok)
            if after:  # reaps the watchdog's stall declaration made possible (it freed the CPU)
                rows[-1][head.index("MMF_OOM_SKIP by (victims)")] += f" ({after} after the stall)"
            rows[-1] += [str(sum(bool(r["ksoftirqd_starved_cpus"]) for r in ok)),
                         f"{statistics.median(k2r):.3f} / {max(k2r):.3f} s" if k2r else "-"]
        if host:
            shares = [float(r["host_share"]) for r in ok if r.get("host_share")]
            rows[-1].append(f"{statistics.median(shares):.2f} ({min(shares):.2f}-{max(shares):.2f})"
                            if shares else "-")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    note = "\n\n* before the watchdog's stall declaration (after it the watchdog kills the children itself)."
    return "\n".join("| " + ln + " |" for ln in lines) + note


def rescan(csv_path: str | Path) -> int:
    """Recompute every row's instrument columns from its console excerpt (after a parser change)."""
    import csv

    path = Path(csv_path)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    fields: list[str] = []
    for r in rows:
        console = (path.parent / r["log"]).read_text()
        spec = KernelSpec(name=r["kernel"], image=Path(), release=r["kernel_release"], hz=0, preempt="",
                          preempt_dynamic=False, policies=(), instruments=(), patch_hash=r["patch_hash"],
                          build_hash="", sched_features="")
        r.update(kernel_columns(console, spec, r["kernel_policy"], r["sched_at_handover"], r["skip_after"]))
        fields += [k for k in r if k not in fields]
    _rewrite_csv(path, fields, rows)
    return len(rows)


def _rewrite_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Write `rows` under the header `fields` to a temporary file, then move it over `path`: a runs.csv
    is never left half written."""
    import csv

    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from oommodel.sched.topology import TOPOLOGY_PRESETS

    p = argparse.ArgumentParser(prog="python -m sweeps.calibrate.kernels")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="infra/kernels/build.sh [NAME ...]")
    b.add_argument("names", nargs="*")
    m = sub.add_parser("measure", help="boot a built kernel N times on a scenario; CSV + console excerpts")
    m.add_argument("scenario")
    m.add_argument("--kernel", required=True)
    m.add_argument("--policy")
    m.add_argument("--sched-at-handover", choices=SCHED_AT_HANDOVER, help="override victim.sched_at_handover")
    m.add_argument("--host-hogs", type=int, default=0, metavar="N",
                   help="N busy loops beside each boot: a controlled host load (recorded in the row)")
    m.add_argument("--topology", choices=sorted(TOPOLOGY_PRESETS), help="override machine.topology")
    m.add_argument("--skip-after", default="pgtables", choices=SKIP_AFTER)
    m.add_argument("--runs", type=int, default=1)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    m.add_argument("--boot-timeout", type=float)
    m.add_argument("--match-kernel", action="store_true", help="set machine.hz and machine.softirq to the kernel's")
    m.add_argument("--out", required=True)
    m.add_argument("--setting", action="append", default=[], metavar="PATH=VALUE",
                   help="an extra write /init makes before the run (repeatable), e.g. "
                        "/sys/kernel/debug/sched/fair_server/cpu0/runtime=0")
    t = sub.add_parser("table", help="the reference table of a runs.csv")
    t.add_argument("csv")
    r = sub.add_parser("rescan", help="recompute a runs.csv's instrument columns from its console excerpts")
    r.add_argument("csv")
    a = p.parse_args(argv)
    if a.cmd == "rescan":
        print(f"{rescan(a.csv)} rows rescanned")
        return 0
    if a.cmd == "table":
        print(summarize(a.csv))
        return 0
    if a.cmd == "build":
        return build(a.names)
    if a.cmd == "measure" and a.host_hogs < 0:
        print(f"refused: --host-hogs: must be >= 0, got {a.host_hogs}")
        return 2
    settings = []
    for item in a.setting:
        path, sep, value = item.partition("=")
        if not sep or not path.startswith("/") or not value:
            print(f"refused: --setting: {item!r} is not PATH=VALUE with an absolute PATH")
            return 2
        settings.append((path, value))
    try:
        rows = measure(a.scenario, a.kernel, a.policy, a.runs, a.out, skip_after=a.skip_after, accel=a.accel,
                       seed=a.seed, sched_at_handover=a.sched_at_handover, boot_timeout=a.boot_timeout,
                       match=a.match_kernel, settings=tuple(settings),
                       topology=a.topology, host_hogs=a.host_hogs)
    except KernelBootFailed as exc:  # earlier boots of this command keep their rows
        print(f"{exc.label}: {exc}")
        return exc.exit_code
    except (KernelError, ValueError) as exc:
        print(f"refused: {exc}")
        return 2
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Profile values measured directly from kernel console logs, not fitted by inverting the model.

Most values of a machine profile are fitted (sweeps/calibrate/fit.py): the model is run at trial
values until one of its statistics matches the kernel's. A few quantities the patched kernel's own
printks time directly, with nothing of the model in between; those are estimated here from the
console excerpts of a reference dataset (`measure:` entries of calibration/reference/manifest.yaml,
read by sweeps/calibrate/reference.py) and written into the profile beside the fitted ones. The fit
then runs with them set, so every fitted value is fitted on the machine the profile describes.

One estimator so far, `reaper_wake_delay` for `machine.idle_exit_us` (oommodel/kernel/oom_reaper.py:
idle_exit): the oom_reaper's wake-up delay onto an idle CPU, read as kill -> "oomsweep: MMF_OOM_SKIP
pid=N by=reaper" for victims too small to have anything to reap (anon-rss under a threshold), so
the interval holds the reaper's wake-up and its first look, not a reap. Summarised as a lognormal
matched to the sample median and 90th percentile (see `lognormal_from_quantiles` for why not the
MLE). These functions read no file: they take console text and sample lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from sweeps.calibrate.text_table import plain_table

Z90 = NormalDist().inv_cdf(0.90)     # 1.2816: the standard normal's 90th percentile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0                   # fixed: the written profile is a function of the data


@dataclass(frozen=True)
class MeasuredTarget:
    """Estimate scenario key `key` with estimator `estimator` from the runs of `dataset` that pass `where`."""

    key: str
    estimator: str                          # a name of ESTIMATORS
    dataset: str                            # a runs.csv (kernels.measure's format), relative to the reference root
    where: Mapping[str, tuple[str, ...]]    # runs.csv column -> accepted values; `topology` from the QEMU -smp
    anon_rss_max_kb: int                    # victims above this had memory to reap: not counted
    note: str = ""


@dataclass(frozen=True)
class MeasuredRun:
    """One boot's contribution: its log and what it was, and the samples the estimator read from it."""

    log: str
    scenario: str
    policy: str
    kernel_release: str
    patch_hash: str
    topology: str
    samples_s: tuple[float, ...]


@dataclass(frozen=True)
class MeasuredResult:
    key: str
    value: Any                               # what the profile sets (a number or a distribution mapping)
    statistic: str
    method: str
    n: int
    median_s: float
    p10_s: float
    p90_s: float
    interval: dict[str, tuple[float, float]]  # per distribution parameter: bootstrap 95 % (percentile)
    mle: tuple[float, float]                  # (mu, sigma) of the log of the positive samples: cross-check
    zeros: int                                # samples of 0 (kill and flag on the same printk microsecond)
    runs: tuple[MeasuredRun, ...]
    note: str = ""

    def text(self) -> str:
        return (f"n={self.n} victims in {len(self.runs)} boots: median {self.median_s * 1e3:.2f} ms, "
                f"p10 {self.p10_s * 1e3:.2f} ms, p90 {self.p90_s * 1e3:.1f} ms")


# --------------------------------------------------------------------------------------------------
# Estimators: console text -> samples (seconds)


def reaper_wake_delays(console: str, anon_rss_max_kb: int) -> tuple[float, ...]:
    """Kill -> MMF_OOM_SKIP set by the reaper, per victim of at most `anon_rss_max_kb` anon-rss.

    Both ends come from the patched kernel's printks on one clock: "Killed process N ... anon-rss:"
    (mm/oom_kill.c:__oom_kill_process(), printed just before wake_oom_reaper()) and "oomsweep:
    MMF_OOM_SKIP pid=N by=reaper" (the instrument in oom_reap_task(), 5.10.223-oomsweep). A victim
    that has nothing to reap gets the flag at the reaper's first look, so the interval is the
    kthread's wake-up (try_to_wake_up() onto an idle vCPU, which must leave do_idle()), plus any wait
    behind a victim already in the reaper's queue. Only kills and flags before the watchdog's stall
    declaration count: after it the watchdog frees CPU 0 itself.
    """
    from sweeps.calibrate.kernel_log import kernel_lines, killed_processes, stall_declared_at
    from sweeps.calibrate.kernels import parse_instruments

    lines = kernel_lines(console)
    stall = stall_declared_at(lines)
    skip_by = parse_instruments(console).skip_by
    out = []
    for k in killed_processes(lines):
        flag = skip_by.get(k.pid)
        if k.anon_rss_kb > anon_rss_max_kb or k.t >= stall or flag is None:
            continue
        t_flag, by = flag
        if by == "reaper" and t_flag < stall:
            out.append(max(0.0, t_flag - k.t))
    return tuple(out)


ESTIMATORS: dict[str, Callable[[str, int], tuple[float, ...]]] = {
    "reaper_wake_delay": reaper_wake_delays,
}
STATISTICS = {
    "reaper_wake_delay": "kill -> MMF_OOM_SKIP by=reaper, victims with nothing to reap",
}


# --------------------------------------------------------------------------------------------------
# Summaries


def lognormal_from_quantiles(samples: Sequence[float]) -> tuple[float, float]:
    """(mu, sigma) of the lognormal whose median and 90th percentile are the samples' (numpy's linear
    quantiles): mu = ln(median), sigma = ln(p90 / median) / z(0.9).

    Why quantiles and not the maximum-likelihood fit (mean and SD of the logs): the TCG guest clock
    advances in steps, so some kill and flag lines share a printk microsecond (a delay of 0, whose log
    is -inf), and the short end, which the MLE weighs as much as the long one, is where that
    granularity lives. What the model needs right is the body and the upper tail: whether the delay
    outlasts a victim's own unmap_vmas() (milliseconds under TCG).
    """
    xs = np.asarray(samples, dtype=float)
    med = float(np.median(xs))
    p90 = float(np.quantile(xs, 0.9))
    if med <= 0 or p90 < med:
        raise ValueError(f"median {med} and p90 {p90}: no lognormal has these")
    return math.log(med), math.log(p90 / med) / Z90


def lognormal_mle(samples: Sequence[float]) -> tuple[float, float]:
    """(mu, sigma) of the log of the positive samples (the zeros dropped): the cross-check of the profile."""
    logs = np.log([x for x in samples if x > 0])
    return float(np.mean(logs)), float(np.std(logs))


def bootstrap_interval(samples: Sequence[float], fn: Callable[[np.ndarray], tuple[float, ...]],
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[tuple[float, float]]:
    """Percentile bootstrap 95 % interval of each component of fn(samples) (victims resampled); a
    resample fn cannot summarise (ValueError: e.g. a median of 0 when many delays are 0) is dropped."""
    rng = np.random.default_rng(seed)
    xs = np.asarray(samples, dtype=float)
    draws_list = []
    for _ in range(resamples):
        try:
            draws_list.append(fn(rng.choice(xs, len(xs))))
        except ValueError:
            continue
    draws = np.array(draws_list, dtype=float).reshape(len(draws_list), -1)
    if len(draws) == 0:
        return [(math.nan, math.nan)] * len(fn(xs))
    return [(float(np.quantile(draws[:, i], 0.025)), float(np.quantile(draws[:, i], 0.975)))
            for i in range(draws.shape[1])]


def estimate(target: MeasuredTarget, runs: Sequence[MeasuredRun]) -> MeasuredResult:
    """The profile value of `target` from the samples of `runs` (microseconds in the value, as the key has)."""
    from sweeps.calibrate.fit import round_sig
    from sweeps.errors import InputError

    samples = [x for r in runs for x in r.samples_s]
    if len(samples) < 10:
        raise InputError(f"measure: {target.key}: {len(samples)} samples in {len(runs)} runs of {target.dataset} "
                         f"(where {dict(target.where)}, anon-rss <= {target.anon_rss_max_kb} kB): too few to estimate")
    us = [x * 1e6 for x in samples]
    mu, sigma = lognormal_from_quantiles(us)
    (mu_lo, mu_hi), (s_lo, s_hi) = bootstrap_interval(us, lambda b: lognormal_from_quantiles(b))
    xs = np.asarray(samples)
    return MeasuredResult(
        key=target.key,
        value={"lognormal": [round_sig(mu), round_sig(sigma)]},
        statistic=STATISTICS[target.estimator],
        method=("lognormal matched to the sample median and 90th percentile: mu = ln(median us), "
                f"sigma = ln(p90 / median) / {Z90:.4f}; interval: percentile bootstrap 95 % over victims "
                f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); not the MLE (mle_of_positive_logs): "
                "zero delays (same printk microsecond) and the short end weigh on it"),
        n=len(samples),
        median_s=float(np.median(xs)),
        p10_s=float(np.quantile(xs, 0.1)),
        p90_s=float(np.quantile(xs, 0.9)),
        interval={"mu": (mu_lo, mu_hi), "sigma": (s_lo, s_hi)},
        mle=lognormal_mle(us),
        zeros=sum(1 for x in samples if x <= 0),
        runs=tuple(runs),
        note=target.note,
    )


def format_measured(results: Sequence[MeasuredResult]) -> str:
    head = ["parameter", "value", "interval (bootstrap 95 %)", "statistic", "data"]
    table = [head] + [[r.key, str(r.value).replace("'", ""),
                       ", ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in r.interval.items()),
                       r.statistic, r.text()] for r in results]
    return plain_table(table)

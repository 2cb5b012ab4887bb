"""Fit the model's measurable parameters to kernel rows, then check the fit on other scenarios.

`oomsweep calibrate fit` (sweeps/calibrate/fit_command.py) is a thin shell over these functions; they
take plain data (outcome dicts, raw scenario dicts) and a `simulate` function, read and write no
file, and are what the tests exercise with synthetic kernel rows made by the model itself.

Method (simulation-based, one parameter at a time in the order of the plan, the whole plan twice so
that each value is fitted with every other one set: Gauss-Seidel):
- A *target* names a scenario key (`costs.first_touch_ms_per_mb`, ...), the kernel statistic that
  measures it (`first_kill_s`, `kill_to_skip_s`, `exit_delay_max_s`, `lockup`, ...), the fit
  scenarios whose kernel runs carry that statistic, optional row filters (`where`), and bounds.
- The model side of a statistic at a parameter value is computed by simulating each fit scenario
  over fixed seeds (common random numbers: the same seeds at every value, so the model curve is a
  deterministic function of the value), with every other value of the plan set as well.
- Continuous statistics (times, counts): the value is the root of the run-weighted mean over the
  fit scenarios of log(model median) - mean(log kernel values) (scipy.optimize.brentq on the log
  of the parameter); each kernel run is also inverted on its own, and the range of those per-run
  values is the reported interval (with one run it is a point: not an uncertainty; `>=`/`<=`
  mark a run the bounds cannot reach).
- Rates (`lockup`): the value is the root of model rate = k/n (the binomial maximum-likelihood
  value when the model rate is monotone in the parameter); the interval inverts the Wilson 95 %
  bounds of k/n the same way.
- A root that is not bracketed inside the bounds leaves the value at the nearer bound, flagged
  `at_bound`.

Agreement (per scenario, kernel rows vs model rows at the fitted values):
- `lockup`: a two-sided Fisher exact test of the two proportions (scipy.stats.fisher_exact) at 5 %:
  agree when p >= 0.05. Both rates are shown with Wilson 95 % intervals.
- continuous statistics: agree when the model's median lies inside the kernel runs' range
  [min, max] widened by max(5 ms, 10 %) for times, max(1, 10 %) for counts (the watchdog polls
  every 5 ms; the log-derived values are bounds, see sweeps/calibrate/kernel_log.py). The model's
  median is shown with its 2.5-97.5 % range over the seeds.
- structural fields (`oom_skip_by`, `kills`, `kills_before_stall`, `handed_over`): agree when the
  most frequent value is the same on both sides (on a tie, when the tied values share one).
- pooled rates (`handovers_per_kill`: all handovers over all kills of a side's runs): agree when the
  two Wilson 95 % intervals overlap. Not a test: kills of one run are not independent trials (one
  boot's victims share its timing), so the intervals are narrower than the truth and an overlap
  rule is the lenient reading; both intervals are shown.

Counts before a stall (`kills_before_stall`, `handovers_per_kill`): a patched kernel's row
(sweeps/calibrate/kernel_checks.py) counts kills and handovers before the watchdog's stall
declaration, after which the reproducer's watchdog kills the children itself. The model has no
such watchdog; its row counts to the horizon, which is the same thing only if nothing was killed
after it declared a lockup. `model_counts_before_stall` keeps a model row when it did not lock up,
or when a victim is still pending at its end (the OOM killer cannot select past a pending victim
without MMF_OOM_SKIP, so the stall it declared never ended); other model rows carry no value.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweeps.calibrate.text_table import plain_table
from sweeps.errors import InputError

Outcome = Mapping[str, Any]
SimulateFn = Callable[..., Outcome]  # (scenario, policy, seed, **policy options) -> outcome fields

POLL_S = 0.005       # the reproducer's watchdog polls every 5 ms
REL_TOL = 0.10       # relative widening of the kernel range for continuous statistics
ALPHA = 0.05


# --------------------------------------------------------------------------------------------------
# Statistics of one outcome (a kernel row or a model row: the same fields)


def _diff(o: Outcome, a: str, b: str) -> float | None:
    x, y = o.get(a), o.get(b)
    if x is None or y is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(y, float) and math.isnan(y)):
        return None
    return float(x) - float(y)


def model_counts_before_stall(o: Outcome) -> bool:
    """A model row whose kills and handovers all came before any lockup it declared (module doc)."""
    return not o.get("lockup") or int(o.get("victims_pending_at_end") or 0) > 0


def _kills_before_stall(o: Outcome) -> Any:
    if "kills_before_stall" in o:  # a kernel row (kernel_checks.kernel_outcome)
        return o["kills_before_stall"]
    return o.get("kills") if model_counts_before_stall(o) else None


def _handovers_per_kill(o: Outcome) -> tuple[int, int] | None:
    """(handovers, kills) of one run before any stall declaration: pooled over runs by `compare`."""
    if "kills_before_stall" in o:
        return int(o["handovers_before_stall"]), int(o["kills_before_stall"])
    if o.get("kills") is None or o.get("handovers") is None or not model_counts_before_stall(o):
        return None
    return int(o["handovers"]), int(o["kills"])


STATISTICS: dict[str, Callable[[Outcome], Any]] = {
    "lockup": lambda o: o.get("lockup"),
    "first_kill_s": lambda o: o.get("first_kill_s"),
    "kill_to_skip_s": lambda o: _diff(o, "first_skip_s", "first_kill_s"),
    "exit_delay_max_s": lambda o: o.get("exit_delay_max_s"),
    "exits_pending_max": lambda o: o.get("exits_pending_max"),
    "kills": lambda o: o.get("kills"),
    "oom_skip_by": lambda o: o.get("oom_skip_by"),
    "handed_over": lambda o: o.get("handed_over"),
    "max_stall_s": lambda o: o.get("max_stall_s"),
    "kills_before_stall": _kills_before_stall,
    "handovers_per_kill": _handovers_per_kill,
}
RATE_STATS = frozenset({"lockup"})
POOLED_RATE_STATS = frozenset({"handovers_per_kill"})  # (k, n) per run, summed over runs
STRUCTURAL_STATS = frozenset({"oom_skip_by", "kills", "kills_before_stall", "handed_over"})
UNITS = {"first_kill_s": "s", "kill_to_skip_s": "s", "exit_delay_max_s": "s", "max_stall_s": "s"}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def matches(o: Outcome, where: Mapping[str, Any]) -> bool:
    """A row filter: every `where` statistic (or outcome field) has the given value."""
    for key, want in where.items():
        fn = STATISTICS.get(key)
        got = fn(o) if fn else o.get(key)
        if got != want:
            return False
    return True


def values(rows: Iterable[Outcome], statistic: str, where: Mapping[str, Any] | None = None) -> list[Any]:
    """The statistic over the rows that pass `where` and carry it (summary rows may not)."""
    fn = STATISTICS[statistic]
    out = []
    for o in rows:
        if where and not matches(o, where):
            continue
        v = fn(o)
        if not _missing(v):
            out.append(v)
    return out


# --------------------------------------------------------------------------------------------------
# Intervals and tests


@dataclass(frozen=True)
class Rate:
    k: int
    n: int
    p: float
    low: float
    high: float

    def text(self, digits: int = 2) -> str:
        return f"{self.k}/{self.n} = {self.p:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def overlaps(self, other: Rate) -> bool:
        return self.low <= other.high and other.low <= self.high


def wilson(k: int, n: int) -> Rate:
    """Wilson 95 % interval (the project's sweeps stats module)."""
    from sweeps.analysis.stats import wilson as _w

    est = _w(k, n)
    return Rate(k, n, est.p, est.low, est.high)


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test of k1/n1 against k2/n2."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided")[1])


def kernel_range(vals: Sequence[float], count: bool = False) -> tuple[float, float]:
    """The kernel runs' [min, max], widened on each side by max(5 ms, 10 %) for times and by
    max(1, 10 %) for counts (the agreement band; log-derived counts are off by one at 5 ms polling)."""
    lo, hi = min(vals), max(vals)
    floor = 1.0 if count else POLL_S
    return lo - max(floor, REL_TOL * abs(lo)), hi + max(floor, REL_TOL * abs(hi))


def _quantile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    i = int(math.floor(pos))
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (pos - i)


# --------------------------------------------------------------------------------------------------
# Model rows


def set_key(scenario: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of a raw scenario dict with the dotted key set (sections created as needed)."""
    out = copy.deepcopy(dict(scenario))
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def with_values(scenario: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(scenario))
    for key, value in params.items():
        out = set_key(out, key, value)
    return out


def default_simulate(scenario: Mapping[str, Any], policy: str, seed: int, **options: Any) -> dict[str, Any]:
    import dataclasses

    from oommodel import simulate

    return dataclasses.asdict(simulate(scenario, policy, seed, **options))


def model_rows(scenario: Mapping[str, Any], params: Mapping[str, Any], seeds: Sequence[int], policy: str,
               simulate: SimulateFn = default_simulate, options: Mapping[str, Any] | None = None) -> list[Outcome]:
    """The model's outcomes of `scenario` with `params` set, one per seed; `options` are the policy's
    (e.g. handoff_rfc_v2's skip_after), passed only when there are some."""
    sc = with_values(scenario, params)
    return [simulate(sc, policy, s, **(options or {})) for s in seeds]


# --------------------------------------------------------------------------------------------------
# The plan and the fit


@dataclass(frozen=True)
class Target:
    """Fit scenario key `key` so that the model's `statistic` matches the kernel's on `scenarios`."""

    key: str
    statistic: str
    scenarios: tuple[str, ...]
    bounds: tuple[float, float]
    where: Mapping[str, Any] = field(default_factory=dict)
    seeds: int = 0          # model replicates per evaluation (0: 12 for continuous, 200 for rates)
    note: str = ""


@dataclass(frozen=True)
class FitResult:
    key: str
    statistic: str
    scenarios: tuple[str, ...]
    value: float
    interval: tuple[float, float]
    kernel: str             # the kernel data fitted, as text ("3 runs: 0.59, 0.62, 0.71 s" / "7/11 = ...")
    model_at_fit: str       # the model statistic at the fitted value
    runs: tuple[str, ...]   # ids of the kernel runs used
    method: str
    at_bound: bool = False
    evaluations: int = 0
    open_ends: tuple[str, ...] = ()   # "low"/"high": a kernel run lies beyond what the bounds can reach

    def interval_text(self) -> str:
        lo = ("<=" if "low" in self.open_ends else "") + f"{round_sig(self.interval[0]):g}"
        hi = (">=" if "high" in self.open_ends else "") + f"{round_sig(self.interval[1]):g}"
        return f"[{lo}, {hi}]"


class FitError(InputError):
    """The reference cannot give a value for a target (no kernel run carries its statistic)."""


def _log_root(f: Callable[[float], float], lo: float, hi: float) -> tuple[float, bool]:
    """Root of f over [lo, hi] searched in log space when lo > 0; (value, at_bound)."""
    from scipy.optimize import brentq

    use_log = lo > 0
    a, b = (math.log(lo), math.log(hi)) if use_log else (lo, hi)
    to_x = (lambda u: math.exp(u)) if use_log else (lambda u: u)
    fa, fb = f(to_x(a)), f(to_x(b))
    if fa == 0:
        return to_x(a), False
    if fb == 0:
        return to_x(b), False
    if (fa > 0) == (fb > 0):
        return (to_x(a) if abs(fa) < abs(fb) else to_x(b)), True
    u = brentq(lambda u: f(to_x(u)), a, b, xtol=1e-4 if use_log else 1e-4 * (hi - lo), maxiter=60)
    return to_x(u), False


def fit_target(target: Target, kernel: Mapping[str, Sequence[tuple[str, Outcome]]],
               scenarios: Mapping[str, Mapping[str, Any]], fitted: Mapping[str, Any], policy: str,
               simulate: SimulateFn = default_simulate) -> FitResult:
    """Fit one target. `kernel`: scenario -> [(run id, outcome)]; `scenarios`: scenario -> raw dict;
    `fitted`: values already fitted (set in every model run)."""
    rate = target.statistic in RATE_STATS
    nseeds = target.seeds or (200 if rate else 12)
    seeds = list(range(nseeds))
    runs: list[str] = []
    kvals: dict[str, list[Any]] = {}
    for name in target.scenarios:
        for rid, o in kernel.get(name, ()):
            v = values([o], target.statistic, target.where)
            if v:
                runs.append(rid)
                kvals.setdefault(name, []).append(v[0])
    if not kvals:
        raise FitError(f"{target.key}: no kernel run of {', '.join(target.scenarios)} carries {target.statistic}"
                       + (f" where {dict(target.where)}" if target.where else ""))
    evals = 0
    cache: dict[tuple[str, float], list[Any]] = {}

    def model_vals(name: str, x: float) -> list[Any]:
        nonlocal evals
        if (name, x) not in cache:
            evals += 1
            rows = model_rows(scenarios[name], {**fitted, target.key: x}, seeds, policy, simulate)
            cache[(name, x)] = values(rows, target.statistic, target.where)
        return cache[(name, x)]

    lo, hi = target.bounds
    if rate:
        # One rate over the fit scenarios' runs, one over the model's rows of the same scenarios.
        flat = [bool(v) for vs in kvals.values() for v in vs]
        w = wilson(sum(flat), len(flat))

        def model_rate(x: float) -> float:
            mv = [bool(v) for name in kvals for v in model_vals(name, x)]
            return sum(mv) / len(mv) if mv else math.nan

        value, at_bound = _log_root(lambda x: model_rate(x) - w.p, lo, hi)
        ilo, _ = _log_root(lambda x: model_rate(x) - w.low, lo, hi)
        ihi, _ = _log_root(lambda x: model_rate(x) - w.high, lo, hi)
        mv = [bool(v) for name in kvals for v in model_vals(name, value)]
        got = wilson(sum(mv), len(mv))
        return FitResult(target.key, target.statistic, target.scenarios, value, (min(ilo, ihi), max(ilo, ihi)),
                         w.text(), got.text(), tuple(runs),
                         "root of model rate = kernel k/n (binomial ML); interval: the Wilson 95 % bounds inverted",
                         at_bound, evals)

    # Continuous: per scenario, the model's median against the kernel runs' mean log (times > 0).
    logs = all(float(v) > 0 for vs in kvals.values() for v in vs)
    tf = (lambda v: math.log(max(v, 1e-12))) if logs else (lambda v: v)

    def gap(x: float, want: Mapping[str, float]) -> float:
        """Run-weighted mean over scenarios of tf(model median) - want[scenario]."""
        total = weight = 0.0
        for name, w_ in want.items():
            mv = model_vals(name, x)
            if not mv:
                return math.nan
            n = len(kvals[name]) if len(want) > 1 else 1
            total += n * (tf(statistics.median(float(v) for v in mv)) - w_)
            weight += n
        return total / weight

    want = {name: statistics.fmean(tf(float(v)) for v in vs) for name, vs in kvals.items()}
    value, at_bound = _log_root(lambda x: gap(x, want), lo, hi)
    inverted = [_log_root(lambda x, name=name, v=v: gap(x, {name: tf(float(v))}), lo, hi)
                for name, vs in kvals.items() for v in vs]
    per_run = [x for x, _ in inverted]
    open_ends = tuple(sorted({"low" if x <= lo * (1 + 1e-9) else "high" for x, b in inverted if b}))
    per_scen = {name: _log_root(lambda x, name=name: gap(x, {name: want[name]}), lo, hi)[0] for name in kvals}
    unit = UNITS.get(target.statistic, "")
    ktext = "; ".join(f"{name}: " + ", ".join(f"{float(v):.3f}" for v in sorted(vs)) + (f" {unit}" if unit else "")
                      for name, vs in kvals.items())
    mtext = "; ".join(f"{name}: median {statistics.median(float(v) for v in model_vals(name, value)):.3f}"
                      f"{' ' + unit if unit else ''}" for name in kvals)
    if len(per_scen) > 1:
        mtext += " (alone: " + ", ".join(f"{n} {round_sig(x):g}" for n, x in per_scen.items()) + ")"
    method = ("root of the run-weighted mean over scenarios of log(model median) - mean log(kernel runs), "
              f"{nseeds} seeds, in the log of the parameter; interval: each kernel run inverted alone (min..max)")
    return FitResult(target.key, target.statistic, target.scenarios, value, (min(per_run), max(per_run)),
                     ktext, mtext, tuple(runs), method, at_bound, evals, open_ends)


def fit_plan(plan: Sequence[Target], kernel: Mapping[str, Sequence[tuple[str, Outcome]]],
             scenarios: Mapping[str, Mapping[str, Any]], policy: str, simulate: SimulateFn = default_simulate,
             start: Mapping[str, Any] | None = None, progress: Callable[[str], None] | None = None,
             passes: int = 2) -> tuple[dict[str, float], list[FitResult]]:
    """Fit the targets in order, each with every other value set (the ones before it from this pass,
    the ones after it from the previous pass: Gauss-Seidel), `passes` times; returns (values, results
    of the last pass)."""
    fitted: dict[str, Any] = dict(start or {})
    results: list[FitResult] = []
    for p in range(passes):
        results = []
        for t in plan:
            others = {k: v for k, v in fitted.items() if k != t.key}
            r = fit_target(t, kernel, scenarios, others, policy, simulate)
            fitted[t.key] = round_sig(r.value)
            results.append(r)
            if progress:
                progress(f"pass {p + 1}/{passes}: {t.key} = {fitted[t.key]:g} "
                         f"{r.interval_text()} from {t.statistic} on "
                         f"{', '.join(t.scenarios)} ({r.evaluations} model evaluations)"
                         + (" AT BOUND" if r.at_bound else ""))
    return fitted, results


def round_sig(x: float) -> float:
    """Four significant digits: a profile value, not a float's noise."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.4g}")


# --------------------------------------------------------------------------------------------------
# Agreement


@dataclass(frozen=True)
class Comparison:
    scenario: str
    role: str               # "fit": a value was fitted on this statistic of this scenario; else "check"
    statistic: str
    kernel: str
    model: str
    rule: str
    agree: bool | None      # None: not comparable (no kernel value)
    scenario_set: str = ""  # "fit": the scenario is in some fit target; "check": held out of the fit

    @property
    def group(self) -> str:
        """Which agreement count the row belongs to: "fitted" (the statistic a value was fitted on),
        "fit-set" (another statistic of a fit scenario), "held-out" (a scenario no value was fitted on),
        "held-out NAME" (a row of the manifest's kernel check set NAME: another kernel's boots)."""
        if self.role == "fit":
            return "fitted"
        if self.scenario_set == "fit":
            return "fit-set"
        return "held-out" if self.scenario_set in ("check", "") else f"held-out {self.scenario_set}"


def compare(scenario: str, role: str, statistic: str, kernel_rows: Sequence[Outcome],
            model: Sequence[Outcome], where: Mapping[str, Any] | None = None) -> Comparison:
    kv = values(kernel_rows, statistic, where)
    mv = values(model, statistic, where)
    unit = UNITS.get(statistic, "")
    label = statistic + (f" [{', '.join(f'{k}={v}' for k, v in where.items())}]" if where else "")
    if not kv or not mv:
        return Comparison(scenario, role, label, "-" if not kv else f"n={len(kv)}",
                          "-" if not mv else f"n={len(mv)}", "not comparable", None)
    if statistic in RATE_STATS:
        k1, n1 = sum(bool(v) for v in kv), len(kv)
        k2, n2 = sum(bool(v) for v in mv), len(mv)
        p = fisher_p(k1, n1, k2, n2)
        return Comparison(scenario, role, label, wilson(k1, n1).text(), wilson(k2, n2).text(),
                          f"Fisher p={p:.3f}", p >= ALPHA)
    if statistic in POOLED_RATE_STATS:
        wk = wilson(sum(k for k, _ in kv), sum(n for _, n in kv))
        wm = wilson(sum(k for k, _ in mv), sum(n for _, n in mv))
        if not wk.n or not wm.n:
            return Comparison(scenario, role, label, wk.text(3), wm.text(3), "not comparable (no kills)", None)
        return Comparison(scenario, role, label, wk.text(3), wm.text(3), "Wilson 95 % intervals overlap",
                          wk.overlaps(wm))
    if statistic in STRUCTURAL_STATS:
        kc, mc = Counter(kv), Counter(mv)
        return Comparison(scenario, role, label, _counts(kc), _counts(mc), "same most frequent value",
                          bool(_modes(kc) & _modes(mc)))
    kf, mf = [float(v) for v in kv], [float(v) for v in mv]
    lo, hi = kernel_range(kf, count=not unit)
    med = statistics.median(mf)
    fmt = (lambda x: f"{x:.3f}") if unit else (lambda x: f"{x:.0f}")
    ktext = (f"n={len(kf)}: {fmt(min(kf))}" + (f"..{fmt(max(kf))}" if len(kf) > 1 else "")
             + (f" {unit}" if unit else ""))
    mtext = (f"n={len(mf)}: median {fmt(med)} [{fmt(_quantile(mf, 0.025))}, {fmt(_quantile(mf, 0.975))}]"
             + (f" {unit}" if unit else ""))
    return Comparison(scenario, role, label, ktext, mtext, f"median in [{fmt(lo)}, {fmt(hi)}]", lo <= med <= hi)


def _modes(c: Counter) -> set[Any]:
    """The most frequent values (several on a tie: with "exit:4, reaper:4" neither is the answer, and
    which one Counter names first would be the order of the boots)."""
    top = max(c.values())
    return {v for v, n in c.items() if n == top}


def _counts(c: Counter) -> str:
    return ", ".join(f"{k}:{v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def format_comparisons(rows: Sequence[Comparison]) -> str:
    """A plain text table (no colour, no box drawing: readable piped or in a mail)."""
    head = ["set", "scenario", "statistic", "fitted", "kernel", "model", "rule", "agree"]
    body = [[c.scenario_set or c.role, c.scenario, c.statistic, "yes" if c.role == "fit" else "-", c.kernel, c.model,
             c.rule, "-" if c.agree is None else ("yes" if c.agree else "NO")] for c in rows]
    return plain_table([head] + body)


def format_fits(results: Sequence[FitResult]) -> str:
    head = ["parameter", "value", "interval", "statistic", "fit scenarios", "kernel", "model at value"]
    table = [head] + [[r.key, f"{round_sig(r.value):g}" + (" (at bound)" if r.at_bound else ""),
                       r.interval_text(), r.statistic,
                       ", ".join(r.scenarios), r.kernel, r.model_at_fit] for r in results]
    return plain_table(table)


# --------------------------------------------------------------------------------------------------
# The check: every scenario, kernel vs model at the fitted values


@dataclass(frozen=True)
class CheckScenario:
    name: str
    scenario: Mapping[str, Any]            # raw scenario dict as booted
    kernel: Sequence[Outcome]
    compare: Sequence[Any]                 # statistic names or {statistic, where}
    policy: str = ""                       # the model policy of this row ("": the check's policy)
    options: Mapping[str, Any] = field(default_factory=dict)  # that policy's options (skip_after)
    scenario_set: str = ""                 # a kernel check set's name ("": fit or check, from the plan)


def compare_specs(compare: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for c in compare:
        if isinstance(c, str):
            out.append((c, {}))
        else:
            out.append((c["statistic"], dict(c.get("where") or {})))
    return out


def check(scenarios: Sequence[CheckScenario], plan: Sequence[Target], params: Mapping[str, Any], seeds: int,
          policy: str, simulate: SimulateFn = default_simulate) -> list[Comparison]:
    """Kernel vs model rows per scenario and statistic; a row's role is "fit" when a target fitted that
    statistic on that scenario, else "check"; its scenario_set says whether the scenario took part in
    the fit at all ("fit") or was held out ("check"), so agreement is reported for each apart. A
    scenario of a kernel check set runs under its own policy and options and keeps its set's name."""
    import dataclasses

    fitted = {(name, t.statistic) for t in plan for name in t.scenarios}
    fit_set = {name for t in plan for name in t.scenarios}
    out = []
    for s in scenarios:
        model = model_rows(s.scenario, params, list(range(seeds)), s.policy or policy, simulate, s.options)
        scenario_set = s.scenario_set or ("fit" if s.name in fit_set else "check")
        for stat, where in compare_specs(s.compare):
            role = "fit" if (s.name, stat) in fitted and not s.scenario_set else "check"
            row = compare(s.name, role, stat, s.kernel, model, where)
            out.append(dataclasses.replace(row, scenario_set=scenario_set))
    return out

"""RT throttling, kernel/sched/rt.c:sched_rt_runtime_exceeded() as of v4.19: per CPU, RT time consumed in
the current period (periods aligned at multiples of rt_period from t=0) is accounted exactly. When it
reaches the budget the RT class on that CPU gets rate 0 until the period ends. The budget is
rt_runtime, or with rt_runtime_share min(period, rt_runtime + n * rt_runtime / ncpus) where n is the
number of *other* CPUs with no runnable RT thread: a stated simplification of do_balance_runtime()
borrowing 1/n of each RT-idle CPU's runtime. Simplifications: (a) throttling happens only while a
non-RT thread is runnable on the CPU: otherwise the throttled window would only idle the CPU, so the RT
thread keeps it (and no events are scheduled); (b) rt_time restarts at 0 at each period boundary
(do_sched_rt_period_timer() subtracts one runtime per period, which is the same whenever the CPU
actually throttled); (c) a budget change caused by another CPU's RT activity is applied at that instant.
"""

from __future__ import annotations

from oommodel.sched.attrs import MachineSpec
from oommodel.sched.runqueue import RunQueue
from oommodel.sched.tolerance import EPS, RT_EPS


class RtThrottle:
    """The RT budget per period (a mixin: the state lives on Machine)."""

    spec: MachineSpec
    _rt_limited: bool
    _share: bool
    _period: float
    _runtime: float
    _n_rt_idle: int
    _budget_s: float

    def _compute_budget(self) -> float:
        """RT runtime available to a CPU that has RT threads (do_balance_runtime(), simplified).

        Only _n_rt_idle changes it, so _enqueue()/_dequeue() refresh the cached `_budget_s`
        whenever a CPU becomes RT-idle or RT-busy; readers use the cache.
        """
        if not self._share:
            return self._runtime
        return min(self._period, self._runtime + self._n_rt_idle * self._runtime / self.spec.cpus)

    def _is_throttled(self, rq: RunQueue) -> bool:
        if not self._rt_limited or not rq.nr_rt or not rq.cfs:
            return False
        budget = self._budget_s
        if budget >= self._period - EPS:
            return False
        return rq.rt_time >= budget - RT_EPS


"""Soak: `simulate` over many random valid scenarios (default 10,000) with the invariants of
tests/model/test_model_properties.py checked on each (affinity, one CPU at a time, CPU conservation,
MMF_OOM_SKIP at most once, lockup consistent with max_stall_s), and no exception.

    python benchmarks/soak_model.py [--examples 10000]

CI runs the same property on 60 examples inside pytest, and this long version (seeded, so the
same 10,000 scenarios every time) as a separate step of .ci/run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "model")]  # this checkout's model, not an editable install elsewhere

from test_model_properties import scenarios, test_invariants_hold_on_random_scenarios  # noqa: E402

from oommodel import POLICIES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=20181114, help="Hypothesis seed: the same scenarios every run")
    args = ap.parse_args()
    check = test_invariants_hold_on_random_scenarios.hypothesis.inner_test
    count = [0]

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(d=scenarios(), policy=st.sampled_from(sorted(POLICIES)), seed=st.integers(0, 2**32))
    def soak(d, policy, seed):
        count[0] += 1
        check(d, policy, seed)

    t0 = time.process_time()
    soak()
    print(f"{count[0]} random scenarios x policies: simulate never raised and every invariant held "
          f"({time.process_time() - t0:.0f} s CPU)")


if __name__ == "__main__":
    main()

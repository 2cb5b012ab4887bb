"""A synthetic sweep whose true lockup region is known, for the explain tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

IN_BOX_P, OUTSIDE_P = 0.9, 0.03


def in_true_box(df: pd.DataFrame) -> np.ndarray:
    return ((df["victim.sched_at_handover"] == "idle")
            & (df["groups.0.sched.rt_priority"] >= 50)
            & (df["reaper.busy_elsewhere_p"] >= 0.05)).to_numpy()


def synthetic_rows(cells: int = 600, replicates: int = 5, seed: int = 1) -> pd.DataFrame:
    """Rows of two policies: 'fragile' locks up with P 0.9 inside the true box
    (idle AND rt_priority >= 50 AND busy_elsewhere_p >= 0.05) and 0.03 outside;
    'sturdy' locks up with P 0.03 everywhere, on seeds shared with 'fragile'."""
    rng = np.random.default_rng(seed)
    keys = pd.DataFrame({
        "victim.sched_at_handover": rng.choice(["unchanged", "idle"], cells),
        "machine.rt_runtime_share": rng.choice([True, False], cells),
        "groups.0.sched.rt_priority": rng.integers(1, 100, cells),
        "reaper.busy_elsewhere_p": rng.uniform(0.0, 0.1, cells),
        "machine.ksoftirqd_awake_p": rng.uniform(0.0, 1.0, cells),
    })
    keys["cell_id"] = [f"c{i:04d}" for i in range(cells)]
    rows = keys.loc[keys.index.repeat(replicates)].reset_index(drop=True)
    rows["replicate"] = np.tile(np.arange(replicates), cells)
    u = rng.random(len(rows))  # one draw per (cell, replicate): common random numbers
    inside = in_true_box(rows)
    frames = []
    for policy, p in (("fragile", np.where(inside, IN_BOX_P, OUTSIDE_P)), ("sturdy", np.full(len(rows), OUTSIDE_P))):
        f = rows.copy()
        f["policy"] = policy
        f["lockup"] = u < p
        f["status"] = "ok"
        f["max_stall_s"] = np.where(f["lockup"], 120.0, rng.uniform(0, 5, len(f)))
        frames.append(f)
    return pd.concat(frames, ignore_index=True)

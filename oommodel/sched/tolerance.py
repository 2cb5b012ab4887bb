"""Numerical tolerances of the fluid scheduler, shared by its modules (one definition each)."""

from __future__ import annotations

import math

EPS = 1e-12          # capacity / time tolerance
WORK_EPS = 1e-12     # remaining work at or below this is done
RT_EPS = 1e-9        # RT budget tolerance (1 ns of CPU time)
INF = math.inf

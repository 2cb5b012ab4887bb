"""The validated sweep: frozen values that the rest of `sweeps` reads (pure; no YAML, no pydantic).

`sweeps.spec.parse` builds a SweepSpec from a sweep file; grid expansion, the runner, tracking and
calibration read it.  Kept apart from the parsing so that reading a spec never imports the parser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sweeps.spec.identity import canonical_json

__all__ = ["PolicyChoice", "Adaptive", "SampleSpec", "MlflowSpec", "SweepSpec", "ADAPTIVE_KEYS"]

ADAPTIVE_KEYS = ("ci_half_width", "min", "max", "batch")


@dataclass(frozen=True)
class PolicyChoice:
    """A policy and the options given for it in the sweep file (validated by the policy)."""

    name: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        """"timeout_backoff", or "timeout_backoff[timeout_s=2.0]" with options (sorted by name)."""
        if not self.options:
            return self.name
        inner = ",".join(f"{k}={_option_text(v)}" for k, v in sorted(self.options))
        return f"{self.name}[{inner}]"

    def options_dict(self) -> dict[str, object]:
        return dict(self.options)


def _option_text(v: object) -> str:
    if isinstance(v, str):
        return v
    return canonical_json(v)


@dataclass(frozen=True)
class Adaptive:
    """Replicate a cell in batches until every policy's Wilson half-width <= ci_half_width, or max."""

    ci_half_width: float
    min: int = 30
    max: int = 2000
    batch: int = 30


@dataclass(frozen=True)
class SampleSpec:
    """Points of a sample design (lhs, random, sobol, saltelli) over numeric ranges and categories, crossed with the grid."""

    method: str
    n: int
    seed: int
    params: dict[str, dict]


@dataclass(frozen=True)
class MlflowSpec:
    experiment: str
    max_cell_runs: int = 2000


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``base`` is the canonical scenario dict; ``grid`` keeps the file's order."""

    name: str
    base: dict
    grid: dict[str, tuple]
    zip: tuple[tuple[str, ...], ...]
    sample: SampleSpec | None
    policies: tuple[PolicyChoice, ...]
    replicates: int | Adaptive
    seed: int
    output: str
    mlflow: MlflowSpec
    source_text: str = field(default="", compare=False)
    sweep_hash: str = ""
    # First replicate index of this execution (fixed replicates only): `--replicate-block K` sets it
    # to K × replicates, so that scheduled runs of one sweep file draw fresh seeds. Not part of the
    # sweep file, of to_dict() or of sweep_hash: it is a property of a run, not of the sweep.
    replicate_start: int = 0

    @property
    def varied_keys(self) -> tuple[str, ...]:
        """Grid keys then sample keys: the parameters that get their own column."""
        sample_keys = tuple(self.sample.params) if self.sample else ()
        return tuple(self.grid) + sample_keys

    @property
    def adaptive(self) -> Adaptive | None:
        return self.replicates if isinstance(self.replicates, Adaptive) else None

    @property
    def replicate_range(self) -> range:
        """Replicate numbers this execution covers (fixed replicates): start .. start + replicates - 1."""
        if isinstance(self.replicates, Adaptive):
            raise TypeError("replicate_range: adaptive replication has no fixed range")
        return range(self.replicate_start, self.replicate_start + self.replicates)

    @property
    def max_replicates(self) -> int:
        return self.replicates.max if isinstance(self.replicates, Adaptive) else self.replicates

    def to_dict(self, *, include_output: bool = True) -> dict[str, Any]:
        """Plain, JSON-serialisable form of the validated spec (what sweep_hash hashes, minus output)."""
        d: dict[str, Any] = {
            "name": self.name,
            "base": self.base,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "zip": [list(g) for g in self.zip],
            "sample": None
            if self.sample is None
            else {
                "method": self.sample.method,
                "n": self.sample.n,
                "seed": self.sample.seed,
                "params": self.sample.params,
            },
            "policies": [{"name": p.name, "options": p.options_dict()} for p in self.policies],
            "replicates": self.replicates
            if isinstance(self.replicates, int)
            else {"adaptive": {k: getattr(self.replicates, k) for k in ADAPTIVE_KEYS}},
            "seed": self.seed,
            "mlflow": {"experiment": self.mlflow.experiment, "max_cell_runs": self.mlflow.max_cell_runs},
        }
        if include_output:
            d["output"] = self.output
        return d

    def compute_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict(include_output=False)).encode("ascii")).hexdigest()

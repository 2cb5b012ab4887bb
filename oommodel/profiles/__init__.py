"""Machine profiles: named sets of measured costs, one YAML file each (`<name>.yaml` here).

A scenario selects one with `machine.profile`; `Scenario.from_dict` fills every key the profile
gives and the scenario does not set (explicit keys win), so the canonical scenario, and with it a
sweep's cell id, holds the values themselves. The model reads no file at simulate time.

File format (written by `oomsweep calibrate fit`, or by hand for `bare_metal`):

    name: qemu_tcg
    description: one line
    values:                      # dotted scenario keys -> value (a number or a distribution)
      costs.touch_ms_per_mb: 1.5
      machine.idle_exit_us: {lognormal: [8.9, 1.4]}   # a distribution, drawn per use like a scenario's own
    sources:                     # per key: where the value came from (free-form mapping)
      costs.touch_ms_per_mb: {statistic: ..., scenarios: [...], runs: [...], interval: [lo, hi]}
    provenance: {...}            # command, reference dataset digest, git sha, model version, date

A profile holds costs, not workload: the machine's shape and the kernel's build options
(`machine.cpus`, `hz`, `preempt`, RT throttling, `softirq`, `topology`) stay the scenario's.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["PROFILE_SECTIONS", "NOT_PROFILE_KEYS", "profile_names", "profile_values", "load_profile",
           "check_profile"]

PROFILE_SECTIONS = ("costs", "machine", "victim", "reaper", "mmap_sem")
NOT_PROFILE_KEYS = frozenset({
    "machine.cpus", "machine.hz", "machine.preempt", "machine.rt_runtime_us", "machine.rt_period_us",
    "machine.rt_runtime_share", "machine.softirq", "machine.profile", "machine.topology",
    "victim.memory", "victim.sched_at_handover", "reaper.cpus", "reaper.sched", "reaper.last_cpu",
})


@lru_cache(maxsize=None)
def profile_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml")))


@lru_cache(maxsize=None)
def load_profile(name: str) -> dict[str, Any]:
    """The parsed profile file; KeyError for an unknown name, ValueError for a bad file."""
    if name not in profile_names():
        raise KeyError(name)
    doc = yaml.safe_load(resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")) or {}
    check_profile(doc, where=f"oommodel/profiles/{name}.yaml")
    return doc


def profile_values(name: str) -> dict[str, Any]:
    return dict(load_profile(name).get("values") or {})


def check_profile(doc: Any, where: str = "profile") -> None:
    """A profile's `values` may only set model parameters (see NOT_PROFILE_KEYS)."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: must be a mapping")
    values = doc.get("values") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{where}: values: must be a mapping of dotted keys")
    for key in values:
        section = str(key).split(".", 1)[0]
        if section not in PROFILE_SECTIONS or "." not in str(key):
            raise ValueError(f"{where}: values.{key}: not a model parameter ({', '.join(PROFILE_SECTIONS)}.*)")
        if any(key == k or str(key).startswith(k + ".") for k in NOT_PROFILE_KEYS):
            raise ValueError(f"{where}: values.{key}: belongs to the scenario (machine shape or kernel build), "
                             "not to a machine profile")
        _check_value(values[key], f"{where}: values.{key}")


def _check_value(value: Any, where: str) -> None:
    """A number or a distribution mapping ({lognormal: [mu, sigma]}, ...); the key's own range is the
    scenario validator's (a profile value is validated as if the scenario had written it)."""
    from oommodel.distributions import dist_from_dict

    if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
        raise ValueError(f"{where}: must be a number or a distribution, got {type(value).__name__}")
    if isinstance(value, dict):
        try:
            dist_from_dict(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None

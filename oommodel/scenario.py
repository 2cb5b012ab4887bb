"""The scenario: a frozen, validated description of one simulated machine and workload.

A scenario is the only input of a run apart from the seed and the policy.  It is validated
once, up front, so that ``simulate()`` can be total: a bad key or value raises
``ScenarioError`` here, with a message that starts with the key path
(``groups[1].sched.nice: must be in -20..19``), never a failure deep inside the model.

The schema (key names are a contract with sweeps and users' YAML files) is declared with
pydantic v2 models; the public value is ``Scenario``, which mirrors the YAML by attribute
(``sc.machine.cpus``, ``sc.groups[0].sched.policy``, ``sc.oom is None``).  Numeric fields
marked Num hold ``float`` or an ``oommodel.distributions.Dist``.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Mapping
from numbers import Integral
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from oommodel.sched.topology import LLC_SCOPES, TOPOLOGY_PRESETS
from oommodel.distributions import (
    Choice,
    Dist,
    LogNormal,
    Uniform,
    check_number,
    dist_from_dict,
    in_range,
    num_from_raw,
    range_text,
)
from oommodel.sched.attrs import MAX_CPUS, SchedAttr, SchedPolicy

__all__ = [
    "Scenario",
    "ScenarioError",
    "SCHED_POLICIES",
    "RT_POLICIES",
]

SCHED_POLICIES: tuple[str, ...] = ("fifo", "rr", "normal", "batch", "idle")
RT_POLICIES: tuple[str, ...] = ("fifo", "rr")
CFS_NICE_POLICIES: tuple[str, ...] = ("normal", "batch")
DEFAULT_PROFILE = "bare_metal"
# Keys that are left out of the canonical dict while at their default, so that scenarios written
# before they existed keep their canonical JSON (and sweeps their cell ids).
_OMIT_AT_DEFAULT: tuple[tuple[str, str, Any], ...] = (
    ("machine", "profile", DEFAULT_PROFILE),
    ("costs", "first_touch_ms_per_mb", None),
    ("machine", "idle_exit_us", 0.0),
    ("reaper", "shared_zap", True),
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_FRACTION_TOL = 1e-6


class ScenarioError(ValueError):
    """An invalid scenario; ``path`` is the offending key ("groups[1].sched.nice", "" = root).

    ``errors`` holds every (path, message) found, the first of which is the message.
    """

    def __init__(self, path: str, message: str, errors: tuple[tuple[str, str], ...] = ()) -> None:
        self.path = path
        self.reason = message
        self.errors = errors or ((path, message),)
        text = f"{path}: {message}" if path else f"(scenario): {message}"
        if len(self.errors) > 1:
            text += f" (and {len(self.errors) - 1} more error(s): " + "; ".join(
                f"{p or '(scenario)'}: {m}" for p, m in self.errors[1:4]
            )
            text += ", ...)" if len(self.errors) > 4 else ")"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions cross process boundaries in sweeps (Ray): keep path and errors.
        return (ScenarioError, (self.path, self.reason, self.errors))


# ------------------------------------------------------------------ field validators
# Plain validators do all type checking themselves: pydantic's lax mode would accept
# True for an int or "5" for a float, which is exactly what a config typo looks like.


def _fail(msg: str, *sub: int | str) -> typing.NoReturn:
    raise PydanticCustomError("scenario", "{msg}", {"msg": msg, "sub": sub})


def _int(lo: int | None = None, hi: int | None = None) -> PlainValidator:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, Integral):
            _fail(f"must be an integer, got {type(v).__name__} {v!r}")
        v = int(v)
        if not in_range(v, lo, False, hi):
            _fail(f"{range_text(lo, False, hi)} (got {v})")
        return v

    return PlainValidator(check)


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> PlainValidator:
    def check(v: Any) -> float:
        try:
            x = check_number(v)
        except ValueError as e:
            _fail(str(e))
        if not in_range(x, lo, lo_open, hi):
            _fail(f"{range_text(lo, lo_open, hi)} (got {v})")
        return x

    return PlainValidator(check)


def _num(lo: float | None = 0.0, lo_open: bool = False, hi: float | None = None) -> PlainValidator:
    def check(v: Any) -> float | Dist:
        try:
            return num_from_raw(v, lo=lo, lo_open=lo_open, hi=hi)
        except ValueError as e:
            _fail(str(e))

    return PlainValidator(check)


def _one_of(*choices: Any) -> PlainValidator:
    def check(v: Any) -> Any:
        # bool/int/str identity matters: `hz: true` must not pass as 1, `hz: "1000"` is a typo.
        for c in choices:
            if type(v) is type(c) and v == c:
                return c
        _fail(f"must be one of {' | '.join(str(c) for c in choices)}, got {v!r}")

    return PlainValidator(check)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        _fail(f"must be true or false, got {type(v).__name__} {v!r}")
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or not _NAME_RE.match(v):
        _fail(f"must match [A-Za-z_][A-Za-z0-9_-]*, got {v!r}")
    if v in ("oom_reaper", "victim", "ksoftirqd"):
        _fail(f"{v!r} is reserved (it names a kernel thread in Outcome.cpu_s)")
    return v


def _cpu_list(v: Any, allow_all: bool) -> tuple[int, ...] | str:
    if allow_all and v == "all" and isinstance(v, str):
        return "all"
    if not isinstance(v, (list, tuple)):
        what = '"all" or a list of CPU numbers' if allow_all else "a list of CPU numbers"
        _fail(f"must be {what}, got {type(v).__name__} {v!r}")
    if not v:
        _fail("must not be empty (omit the key for all CPUs)" if not allow_all else "must not be empty")
    seen: set[int] = set()
    for i, c in enumerate(v):
        if isinstance(c, bool) or not isinstance(c, Integral):
            _fail(f"must be an integer, got {type(c).__name__} {c!r}", i)
        if c < 0:
            _fail(f"must be >= 0 (got {c})", i)
        if c in seen:
            _fail(f"duplicate CPU {c}", i)
        seen.add(int(c))
    return tuple(int(c) for c in v)


def _handover_sched(v: Any) -> str | Choice:
    if isinstance(v, Mapping):
        try:
            d = dist_from_dict(v, strings=True)
        except ValueError as e:
            _fail(str(e))
        for i, s in enumerate(d.values):
            err = _handover_error(s)
            if err:
                _fail(err, "choice", i)
        return d
    err = _handover_error(v)
    if err:
        _fail(err)
    return v


def _handover_error(v: Any) -> str:
    """"" when v is "unchanged" or a SchedAttr text (SchedAttr.parse: the one grammar), else why not."""
    if not isinstance(v, str):
        return f"must be a string or {{choice: [...]}}, got {type(v).__name__} {v!r}"
    if v == "unchanged":
        return ""
    try:
        SchedAttr.parse(v)
    except ValueError as e:
        return f"must be unchanged or a sched attr: {e}"
    return ""


def _opt_num(v: Any) -> float | Dist | None:
    if v is None:
        return None
    try:
        return num_from_raw(v, lo=0.0, lo_open=False, hi=None)
    except ValueError as e:
        _fail(str(e))


def _profile_name(v: Any) -> str:
    from oommodel.profiles import profile_names

    if not isinstance(v, str) or v not in profile_names():
        _fail(f"unknown machine profile {v!r}; known: {', '.join(profile_names())}")
    return v


def _dump_num(v: float | Dist) -> Any:
    return v.to_dict() if isinstance(v, Dist) else v


_NumSer = PlainSerializer(_dump_num)

Num = Annotated[Union[float, Dist], _num(0.0), _NumSer]  # Num >= 0
PosNum = Annotated[Union[float, Dist], _num(0.0, lo_open=True), _NumSer]  # Num > 0
OptNum = Annotated[Union[float, Dist, None], PlainValidator(_opt_num), PlainSerializer(lambda v: None if v is None else _dump_num(v))]
_prob = _float(0.0, 1.0).func
Prob = Annotated[float, _float(0.0, 1.0)]
PosFloat = Annotated[float, _float(0.0, lo_open=True)]
CpuList = Annotated[tuple[int, ...], PlainValidator(lambda v: _cpu_list(v, False)), PlainSerializer(list)]
ReaperCpus = Annotated[
    Union[str, tuple[int, ...]],
    PlainValidator(lambda v: _cpu_list(v, True)),
    PlainSerializer(lambda v: v if isinstance(v, str) else list(v)),
]
HandoverSched = Annotated[
    Union[str, Choice],
    PlainValidator(_handover_sched),
    PlainSerializer(lambda v: v.to_dict() if isinstance(v, Dist) else v),
]


# ------------------------------------------------------------------ schema


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, revalidate_instances="never")


class TopologySpec(_Spec):
    """sockets x cores_per_socket CPUs, numbered socket by socket; llc: socket (the socket's cores
    share one L3) or core (every core its own LLC)."""

    sockets: Annotated[int, _int(1, MAX_CPUS)]
    cores_per_socket: Annotated[int, _int(1, MAX_CPUS)]
    llc: Annotated[str, _one_of(*LLC_SCOPES)] = "socket"


def _topology(v: Any) -> str | TopologySpec:
    if isinstance(v, str):
        if v not in TOPOLOGY_PRESETS:
            _fail(f"must be one of {' | '.join(TOPOLOGY_PRESETS)} or {{sockets, cores_per_socket, llc}}, got {v!r}")
        return v
    if isinstance(v, Mapping):
        try:
            return TopologySpec.model_validate(v)
        except ValidationError as e:
            err = _convert(e, TopologySpec)
            _fail(err.reason, *err.path.split(".")) if err.path else _fail(err.reason)
    _fail(f"must be a preset name or a mapping, got {type(v).__name__} {v!r}")


def _last_cpu(v: Any) -> str | int:
    if v == "any" and isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, Integral) or v < 0:
        _fail(f'must be "any" or a CPU number, got {type(v).__name__} {v!r}')
    return int(v)


TopologyField = Annotated[
    Union[str, TopologySpec],
    PlainValidator(_topology),
    PlainSerializer(lambda v: v if isinstance(v, str) else v.model_dump(mode="json")),
]
LastCpu = Annotated[Union[str, int], PlainValidator(_last_cpu)]


class Machine(_Spec):
    """CPUs, tick and RT throttling: the knobs Handa's and Hocko's kernels differed in."""

    cpus: Annotated[int, _int(1, MAX_CPUS)] = 8
    topology: TopologyField = "shared_llc"
    hz: Annotated[int, _one_of(100, 250, 300, 1000)] = 1000
    preempt: Annotated[str, _one_of("none", "voluntary", "full")] = "full"
    rt_runtime_us: Annotated[int, _int(-1)] = 950000
    rt_period_us: Annotated[int, _int(1000)] = 1000000
    rt_runtime_share: Annotated[bool, PlainValidator(_bool)] = True
    softirq: Annotated[str, _one_of("inline", "ksoftirqd_defer")] = "inline"
    ksoftirqd_awake_p: Annotated[float | None, PlainValidator(lambda v: None if v is None else _prob(v))] = None
    ksoftirqd_wake_hz: Annotated[float, _float(0.0)] = 0.34
    balance_interval_ms: PosFloat = 4.0
    # From a wake-up aimed at an idle CPU to the woken task running there: the cpuidle state's
    # exit latency on bare metal (a few us, 0 here), a halted vCPU being run again by its host in
    # a VM (ms under QEMU TCG on a loaded host). Any distribution; drawn per wake-up.
    idle_exit_us: Num = 0.0
    # The machine profile whose measured costs filled the keys this scenario did not set
    # (oommodel/profiles/<name>.yaml, resolved once in Scenario.from_dict, never at simulate time).
    profile: Annotated[str, PlainValidator(_profile_name)] = DEFAULT_PROFILE


class Oom(_Spec):
    """The OOM domain: a memcg limit or the whole machine."""

    domain: Annotated[str, _one_of("memcg", "global")]
    limit_mb: PosFloat


class Sched(_Spec):
    """A scheduling class; fifo/rr take rt_priority, normal/batch take nice, idle neither."""

    policy: Annotated[str, _one_of(*SCHED_POLICIES)]
    rt_priority: Annotated[int | None, _int(1, 99)] = None
    nice: Annotated[int | None, _int(-20, 19)] = None

    @model_validator(mode="before")
    @classmethod
    def _per_policy(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        policy = data.get("policy")
        if not isinstance(policy, str) or policy not in SCHED_POLICIES:
            return data  # the field validator reports it
        # An explicit null means "absent" (the canonical dict simply omits the key).
        data = {k: v for k, v in data.items() if not (v is None and k in ("rt_priority", "nice"))}
        rt_prio = data.get("rt_priority")
        nice = data.get("nice")
        if policy in RT_POLICIES:
            if nice is not None:
                _fail(f"not allowed for policy {policy} (use rt_priority)", "nice")
            if rt_prio is None:
                _fail(f"required for policy {policy} (1..99)", "rt_priority")
        elif policy in CFS_NICE_POLICIES:
            if rt_prio is not None:
                _fail(f"not allowed for policy {policy} (use nice)", "rt_priority")
            if nice is None:
                data = {**data, "nice": 0}
        else:
            for key in ("rt_priority", "nice"):
                if data.get(key) is not None:
                    _fail("not allowed for policy idle", key)
        return data

    @property
    def is_rt(self) -> bool:
        return self.policy in RT_POLICIES

    @property
    def attr(self) -> SchedAttr:
        """The model's one scheduling-attribute type for this validated value (no text round trip)."""
        if self.policy in RT_POLICIES:
            return SchedAttr(SchedPolicy(self.policy), rt_priority=self.rt_priority or 0)
        return SchedAttr(SchedPolicy(self.policy), nice=self.nice or 0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"policy": self.policy}
        if self.rt_priority is not None:
            d["rt_priority"] = self.rt_priority
        if self.nice is not None:
            d["nice"] = self.nice
        return d


_SchedField = Annotated[Sched, PlainSerializer(lambda s: s.to_dict())]
_DEFAULT_SCHED = Sched(policy="normal", nice=0)


class Group(_Spec):
    """A set of identical processes (``count`` × ``threads_per_process`` threads)."""

    name: Annotated[str, PlainValidator(_name)]
    count: Annotated[int, _int(1, 4096)]
    role: Annotated[str, _one_of("allocator", "hog", "sleeper")]
    threads_per_process: Annotated[int, _int(1, 64)] = 1
    sched: _SchedField = _DEFAULT_SCHED
    cpus: CpuList | None = None
    rss_mb: Num = 0.0
    oom_score_adj: Annotated[int, _int(-1000, 1000)] = 0
    start_s: Num = 0.0


class VictimMemory(_Spec):
    """Fractions of the victim's RSS by what the reaper can do with it."""

    anon: Prob = 1.0
    mlocked: Prob = 0.0
    shared_file: Prob = 0.0


class Victim(_Spec):
    memory: VictimMemory = VictimMemory()
    pgtable_mb_per_gb: Num = 2.0
    sched_at_handover: HandoverSched = "unchanged"


class Costs(_Spec):
    """CPU costs; only unmap_ms_per_gb has a source (Aaron Lu, ~34 ms/GB), the rest are knobs.

    `first_touch_ms_per_mb` is the cost of faulting in memory the machine has never handed out
    before (under QEMU TCG the host must back each new guest page: several times the cost of
    reusing a page freed earlier in the run); null means `touch_ms_per_mb` for every page.
    """

    touch_ms_per_mb: Num = 0.25
    first_touch_ms_per_mb: OptNum = None
    unmap_ms_per_gb: Num = 34.0
    free_pgtables_ms_per_gb: Num = 10.0
    close_ms: Num = LogNormal(1.0, 1.0)
    close_blocks_on_memory_p: Prob = 0.0
    alloc_loop_us: PosNum = 100.0
    exit_ms: Num = 0.05
    oom_kill_us: Num = 50.0


class Reaper(_Spec):
    cpus: ReaperCpus = "all"
    last_cpu: LastCpu = "any"
    sched: _SchedField = _DEFAULT_SCHED
    busy_elsewhere_p: Prob = 0.0
    busy_elsewhere_s: Num = 1.0
    shared_zap: bool = True


class MmapSem(_Spec):
    writer_at_kill_p: Prob = 0.0
    writer_hold_ms: Num = Uniform(0.0, 2000.0)


class ScenarioSpec(_Spec):
    """The root of the schema; wrapped by ``Scenario``."""

    horizon_s: PosFloat = 120.0
    lockup_after_s: PosFloat = 20.0
    machine: Machine = Machine()
    oom: Oom | None = None
    groups: tuple[Group, ...]
    victim: Victim = Victim()
    costs: Costs = Costs()
    reaper: Reaper = Reaper()
    mmap_sem: MmapSem = MmapSem()


# ------------------------------------------------------------------ error conversion


def _format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = root or ScenarioSpec
    for part in loc:
        if cls is None:
            return None
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        cls = _model_in(field.annotation)
    return cls


_PYDANTIC_TYPES = {
    "missing": "required key is missing",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}


def _convert(err: ValidationError, root: type[BaseModel] | None = None) -> ScenarioError:
    found: list[tuple[str, str]] = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        etype = e["type"]
        ctx = e.get("ctx") or {}
        if etype == "scenario":
            loc = loc + tuple(ctx.get("sub", ()))
            msg = ctx["msg"]
        elif etype == "extra_forbidden":
            model = _model_at(loc[:-1], root or ScenarioSpec)
            known = list(model.model_fields) if model is not None else []
            near = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean '{near[0]}'?)" if near else "")
            if known and not near:
                msg += f"; known keys: {', '.join(known)}"
        elif etype == "invalid_key":
            msg = f"key {loc[-1]!r} must be a string"
            loc = loc[:-1]
        elif etype in _PYDANTIC_TYPES:
            msg = _PYDANTIC_TYPES[etype]
            if etype != "missing":
                msg += f", got {type(e['input']).__name__} {e['input']!r}"
        else:  # not expected: keep pydantic's words
            msg = e["msg"]
        found.append((_format_path(loc), msg))
    return ScenarioError(found[0][0], found[0][1], tuple(found))


# ------------------------------------------------------------------ cross-field checks


def _cross_check(spec: ScenarioSpec) -> None:
    m = spec.machine
    if not spec.groups:
        raise ScenarioError("groups", "must have at least one group")
    if m.rt_runtime_us > m.rt_period_us:
        raise ScenarioError(
            "machine.rt_runtime_us",
            f"must be -1 or in 0..rt_period_us ({m.rt_period_us}), got {m.rt_runtime_us}",
        )
    names: dict[str, int] = {}
    for i, g in enumerate(spec.groups):
        if g.name in names:
            raise ScenarioError(f"groups[{i}].name", f"duplicate group name {g.name!r} (also groups[{names[g.name]}])")
        names[g.name] = i
        if g.cpus is not None:
            for j, c in enumerate(g.cpus):
                if c >= m.cpus:
                    raise ScenarioError(f"groups[{i}].cpus[{j}]", f"must be in 0..{m.cpus - 1} (machine.cpus is {m.cpus}), got {c}")
    topo = m.topology
    if not isinstance(topo, str) and topo.sockets * topo.cores_per_socket != m.cpus:
        raise ScenarioError(
            "machine.topology",
            f"sockets x cores_per_socket = {topo.sockets * topo.cores_per_socket}, must equal machine.cpus ({m.cpus})",
        )
    last = spec.reaper.last_cpu
    if last != "any":
        allowed = range(m.cpus) if spec.reaper.cpus == "all" else spec.reaper.cpus
        if last not in allowed:
            raise ScenarioError("reaper.last_cpu", f"must be one of the reaper's CPUs {list(allowed)}, got {last}")
    if spec.reaper.cpus != "all":
        for j, c in enumerate(spec.reaper.cpus):
            if c >= m.cpus:
                raise ScenarioError(f"reaper.cpus[{j}]", f"must be in 0..{m.cpus - 1} (machine.cpus is {m.cpus}), got {c}")
    mem = spec.victim.memory
    total = mem.anon + mem.mlocked + mem.shared_file
    if abs(total - 1.0) > _FRACTION_TOL:
        raise ScenarioError("victim.memory", f"anon + mlocked + shared_file must sum to 1, got {total:g}")


# ------------------------------------------------------------------ machine profiles


def _apply_profile(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Fill the keys a `machine.profile` measures and the scenario does not set (explicit keys win).

    Resolved here, at validation, so the canonical dict holds the values and `simulate()` reads no file.
    """
    machine = data.get("machine")
    if not isinstance(machine, Mapping) or "profile" not in machine:
        return data
    from oommodel.profiles import profile_values

    name = machine["profile"]
    if not isinstance(name, str):
        return data  # the field validator reports it
    try:
        values = profile_values(name)
    except KeyError:
        return data  # the field validator reports it, naming the known profiles
    out = json.loads(json.dumps(data, default=_json_default))
    for path, value in values.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node.get(part, {}), Mapping):
                break
            node = node.setdefault(part, {})
        else:
            node.setdefault(leaf, value)
    return out


def _profile_keys(name: Any) -> frozenset[str]:
    """The dotted keys machine profile `name` fills (empty for an unknown name or bare_metal)."""
    from oommodel.profiles import profile_values

    try:
        return frozenset(profile_values(name)) if isinstance(name, str) else frozenset()
    except KeyError:
        return frozenset()


def _json_default(v: Any) -> Any:
    if isinstance(v, Dist):
        return v.to_dict()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


# ------------------------------------------------------------------ the value


class Scenario:
    """A validated, immutable scenario.  Build it with ``from_dict`` or ``from_yaml``.

    Equality and hashing follow the canonical content (``to_dict()``); attribute access
    mirrors the YAML keys.
    """

    __slots__ = ("_spec", "_hash")

    horizon_s: float
    lockup_after_s: float
    machine: Machine
    oom: Oom | None
    groups: tuple[Group, ...]
    victim: Victim
    costs: Costs
    reaper: Reaper
    mmap_sem: MmapSem

    def __init__(self, spec: ScenarioSpec) -> None:
        if not isinstance(spec, ScenarioSpec):
            raise TypeError("use Scenario.from_dict() or Scenario.from_yaml()")
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_hash", None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Validate ``data`` (plain dict as from YAML or JSON); raises ScenarioError."""
        if not isinstance(data, Mapping):
            raise ScenarioError("", f"a scenario must be a mapping, got {type(data).__name__}")
        data = _apply_profile(data)
        try:
            spec = ScenarioSpec.model_validate(data)
        except ValidationError as e:
            raise _convert(e) from None
        _cross_check(spec)
        return cls(spec)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Scenario:
        """Load with ``yaml.safe_load``; a YAML syntax error is a ScenarioError too."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ScenarioError("", f"{path}: invalid YAML: {e}") from None
        return cls.from_dict(data if data is not None else {})

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain dict: every key present, defaults filled, JSON-serialisable.

        Exception: the keys of `_OMIT_AT_DEFAULT` are left out while at their default.
        """
        d = self._spec.model_dump(mode="json")
        profiled = _profile_keys(d["machine"].get("profile", DEFAULT_PROFILE))
        for section, key, default in _OMIT_AT_DEFAULT:
            # kept when the profile sets the key: an explicit default (idle_exit_us: 0 under qemu_tcg)
            # must not turn into the profile's value when the canonical dict is read again
            if d[section].get(key, default) == default and f"{section}.{key}" not in profiled:
                d[section].pop(key, None)
        return d

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no spaces): what a cell identity hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def spec(self) -> ScenarioSpec:
        return self._spec

    def group(self, name: str) -> Group:
        for g in self._spec.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not on the class: the schema's top-level keys.
        if name in ScenarioSpec.model_fields:
            return getattr(self._spec, name)
        raise AttributeError(f"'Scenario' has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Scenario is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Scenario is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scenario):
            return NotImplemented
        return self is other or self._spec == other._spec

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash(self.to_json())
            object.__setattr__(self, "_hash", h)
        return h

    def __reduce__(self) -> tuple[Any, ...]:
        return (Scenario.from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        names = ", ".join(f"{g.name}×{g.count}" for g in self._spec.groups)
        oom = "none" if self._spec.oom is None else f"{self._spec.oom.domain} {self._spec.oom.limit_mb:g} MB"
        return f"Scenario(cpus={self._spec.machine.cpus}, oom={oom}, groups=[{names}])"

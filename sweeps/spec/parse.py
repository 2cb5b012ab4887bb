"""The sweep file: load, validate and freeze it (pure; nothing here starts Ray or MLflow).

Everything that can be wrong with a sweep is found here, before any work: unknown keys (with the
closest valid name), wrong types, grid keys that are not in the scenario, cells the scenario schema
rejects, zip groups of unequal length, unknown policies or options. Every error is a SweepError whose
message starts with the key path.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sweeps.errors import SweepError
from sweeps.spec.identity import canonical_json
from sweeps.spec.grid import grid_points
from sweeps.spec.keypath import apply_params, get_path, parse_path
from sweeps.spec.oommodel_api import policy_registry
from sweeps.spec.model import ADAPTIVE_KEYS, Adaptive, MlflowSpec, PolicyChoice, SampleSpec, SweepSpec

__all__ = [
    "SweepError",  # re-exported: callers that validate a sweep catch it from here
    "load_sweep",
    "parse_sweep",
    "safe_yaml",
    "NAME_RE",
    "TOP_LEVEL_KEYS",
]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
TOP_LEVEL_KEYS = ("name", "base", "grid", "zip", "sample", "policies", "replicates", "seed", "output", "mlflow")
_REQUIRED = ("name", "base", "policies", "replicates")
_SAMPLE_KEYS = ("method", "n", "seed", "params")
_MLFLOW_KEYS = ("experiment", "max_cell_runs")
_RANGE_KINDS = ("uniform", "loguniform", "int", "choice")
_SAMPLE_METHODS = ("lhs", "random", "sobol", "saltelli")


# ------------------------------------------------------------------ values


def _freeze(v: Any) -> Any:
    """Lists become tuples (recursively) so that a PolicyChoice stays hashable."""
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


# ------------------------------------------------------------------ pydantic shapes (types and ranges)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _AdaptiveModel(_Strict):
    ci_half_width: float = Field(gt=0.0, le=0.5)
    min: int = Field(default=30, ge=1)
    max: int = Field(default=2000, ge=1)
    batch: int = Field(default=30, ge=1)


class _SampleModel(_Strict):
    method: str = "lhs"
    n: int = Field(ge=0)
    seed: int | None = Field(default=None, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)


class _MlflowModel(_Strict):
    experiment: str | None = Field(default=None, min_length=1)
    max_cell_runs: int = Field(default=2000, ge=0)


class _TopModel(_Strict):
    name: str
    base: Any
    grid: dict[str, Any] | None = None
    zip: list[list[str]] | None = None
    sample: Any = None
    policies: Any
    replicates: Any
    seed: int = Field(default=0, ge=0)
    output: str = Field(default="results/", min_length=1)
    mlflow: Any = None


def _loc_text(loc: tuple) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _validate(model: type[BaseModel], data: Any, prefix: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        sub = _loc_text(tuple(err["loc"]))
        path = ".".join(p for p in (prefix, sub) if p) if not sub.startswith("[") else prefix + sub
        msg = err["msg"]
        msg = msg[:1].lower() + msg[1:]
        if err["type"] != "missing":
            msg += f", got {err.get('input')!r}"
        raise SweepError(path, msg) from None


def _closest(word: str, choices: Any) -> str:
    m = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _key_text(key: Any) -> str:
    """A key as the message names it: quoted when it is blank or edged with spaces (a YAML key
    " " would otherwise read as no key at all)."""
    text = str(key)
    return repr(text) if not text.strip() or text != text.strip() else text


def _check_keys(data: Mapping, allowed: tuple[str, ...], prefix: str) -> None:
    for k in data:
        if k not in allowed:
            path = f"{prefix}.{_key_text(k)}" if prefix else _key_text(k)
            raise SweepError(path, f"unknown key{_closest(k, allowed)}")


def _mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SweepError(path, f"must be a mapping, got {type(value).__name__}")
    return value


def _scenario_error_parts(e: Any) -> tuple[str, str]:
    """(key path inside the scenario, reason) of an oommodel.ScenarioError."""
    return e.path or "", e.reason


# ------------------------------------------------------------------ the model side (lazy)


def _scenario_api() -> tuple[Callable[[dict], dict], Callable[[Path], dict], tuple[type[Exception], ...]]:
    from oommodel import Scenario, ScenarioError

    def canon(d: dict) -> dict:
        return Scenario.from_dict(d).to_dict()

    def from_file(p: Path) -> dict:
        return Scenario.from_yaml(p).to_dict()

    return canon, from_file, (ScenarioError,)


# ------------------------------------------------------------------ parts of the file


def _parse_base(raw: Any, base_dir: Path, canon, from_file, scenario_errors) -> dict:
    if isinstance(raw, str):
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise SweepError("base", f"no such scenario file: {path}")
        _check_scenario_file(path)
        try:
            return from_file(path)
        except scenario_errors as e:
            sub, reason = _scenario_error_parts(e)
            raise SweepError(f"base.{sub}" if sub else "base", f"{reason} (in {path})") from None
    if isinstance(raw, Mapping):
        try:
            return canon(dict(raw))
        except scenario_errors as e:
            sub, reason = _scenario_error_parts(e)
            raise SweepError(f"base.{sub}" if sub else "base", reason) from None
    raise SweepError("base", f"must be a scenario file path or a scenario mapping, got {type(raw).__name__}")


def _is_prefix(a: str, b: str) -> bool:
    """True if key path a names an ancestor of key path b."""
    return b.startswith(a) and len(b) > len(a) and b[len(a)] in ".["


def _parse_grid(raw: Mapping[str, Any] | None, base: dict) -> dict[str, tuple]:
    grid: dict[str, tuple] = {}
    for key, values in (raw or {}).items():
        path = f"grid.{key}"
        try:
            parse_path(key)  # syntax
            get_path(base, key)
        except SweepError as e:
            raise SweepError(path, e.reason) from None
        if not isinstance(values, list):
            raise SweepError(path, f"must be a list of values, got {type(values).__name__}")
        if not values:
            raise SweepError(path, "empty list: give at least one value")
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            try:
                text = canonical_json(v)
            except (TypeError, ValueError):
                raise SweepError(f"{path}[{i}]", f"not a plain YAML value: {v!r}") from None
            if text in seen:
                raise SweepError(f"{path}[{i}]", f"duplicate value {v!r} (also at [{seen[text]}])")
            seen[text] = i
        for other in grid:
            if _is_prefix(other, key) or _is_prefix(key, other):
                raise SweepError(path, f"overlaps grid key '{other}': vary one or the other")
        grid[key] = tuple(values)
    return grid


def _parse_zip(raw: list[list[str]] | None, grid: dict[str, tuple]) -> tuple[tuple[str, ...], ...]:
    groups: list[tuple[str, ...]] = []
    owner: dict[str, int] = {}
    for i, group in enumerate(raw or []):
        path = f"zip[{i}]"
        if not group:
            raise SweepError(path, "empty group: list the grid keys varied together")
        for j, key in enumerate(group):
            if key not in grid:
                raise SweepError(f"{path}[{j}]", f"'{key}' is not a grid key{_closest(key, grid)}")
            if key in owner:
                raise SweepError(f"{path}[{j}]", f"'{key}' is already in zip[{owner[key]}]")
            owner[key] = i
        lengths = {key: len(grid[key]) for key in group}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k} ({n})" for k, n in lengths.items())
            raise SweepError(path, f"keys zipped together need the same number of values: {shown}")
        groups.append(tuple(group))
    return tuple(groups)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_sample(raw: Any, base: dict, grid: dict[str, tuple], sweep_seed: int) -> SampleSpec | None:
    if raw is None:
        return None
    _check_keys(_mapping(raw, "sample"), _SAMPLE_KEYS, "sample")
    m = _validate(_SampleModel, raw, "sample")
    if m.method not in _SAMPLE_METHODS:
        raise SweepError("sample.method", f"must be 'lhs', 'random', 'sobol' or 'saltelli', got {m.method!r}"
                         f"{_closest(m.method, _SAMPLE_METHODS)}")
    if m.n == 0 and not m.params:
        return None
    if m.n == 0:
        raise SweepError("sample.n", "must be >= 1 when sample.params is given")
    if not m.params:
        raise SweepError("sample.params", "must name at least one key when sample.n > 0")
    if m.method in ("sobol", "saltelli") and m.n & (m.n - 1):
        raise SweepError("sample.n", f"must be a power of 2 for method {m.method} (a Sobol' sequence "
                         f"loses its balance otherwise), got {m.n}")
    params: dict[str, dict] = {}
    for key, rng in m.params.items():
        path = f"sample.params.{key}"
        try:
            parse_path(key)
            get_path(base, key)
        except SweepError as e:
            raise SweepError(path, e.reason) from None
        for g in grid:
            if g == key or _is_prefix(g, key) or _is_prefix(key, g):
                raise SweepError(path, f"also varied by grid key '{g}': vary it in one place")
        rng = _mapping(rng, path)
        if len(rng) != 1:
            raise SweepError(path, "must be one of {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {int: [lo, hi]}, "
                             "{choice: [v1, v2, ...]}")
        (kind, bounds), = rng.items()
        if kind not in _RANGE_KINDS:
            raise SweepError(f"{path}.{kind}", f"unknown range kind{_closest(kind, _RANGE_KINDS)}")
        if kind == "choice":
            if not (isinstance(bounds, list) and len(bounds) >= 2):
                raise SweepError(f"{path}.choice", f"must be a list of at least two values, got {bounds!r}")
            texts = [canonical_json(v) for v in bounds]
            for i, t in enumerate(texts):
                if texts.index(t) != i:
                    raise SweepError(f"{path}.choice[{i}]", f"duplicate value {bounds[i]!r} (also at [{texts.index(t)}])")
            params[key] = {"choice": list(bounds)}
            continue
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds)):
            raise SweepError(f"{path}.{kind}", f"must be [lo, hi] (two numbers), got {bounds!r}")
        lo, hi = bounds
        if kind == "int":
            if not all(isinstance(b, int) for b in bounds) or lo > hi:
                raise SweepError(f"{path}.int", f"must be two integers lo <= hi, got {bounds!r}")
        elif not lo < hi:
            raise SweepError(f"{path}.{kind}", f"need lo < hi, got {bounds!r}")
        if kind == "loguniform" and lo <= 0:
            raise SweepError(f"{path}.loguniform", f"need 0 < lo, got {bounds!r}")
        params[key] = {kind: [lo, hi]}
    seed = m.seed if m.seed is not None else sweep_seed
    return SampleSpec(method=m.method, n=m.n, seed=seed, params=params)


def _parse_policies(raw: Any, registry: Mapping[str, Any]) -> tuple[PolicyChoice, ...]:
    names = list(registry)
    if raw == "all":
        return tuple(PolicyChoice(name) for name in names)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SweepError("policies", 'must be "all" or a non-empty list of policy names')
    out: list[PolicyChoice] = []
    labels: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"policies[{i}]"
        if isinstance(item, str):
            name, opts = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            (name, opts), = item.items()
        else:
            raise SweepError(path, "must be a policy name or {name: {option: value}}")
        if name == "all":
            raise SweepError(path, '"all" stands alone: write policies: all')
        if name not in registry:
            raise SweepError(path, f"unknown policy {name!r}{_closest(name, names)}")
        if opts is None:
            opts = {}
        if not isinstance(opts, Mapping):
            raise SweepError(f"{path}.{name}", f"options must be a mapping, got {type(opts).__name__}")
        policy = registry[name]
        known = tuple(policy.options)
        for k in opts:
            if k not in known:
                hint = _closest(k, known)
                valid = f"; valid: {', '.join(known)}" if known and not hint else ""
                raise SweepError(f"{path}.{name}.{k}", f"unknown option{hint}{valid}")
        try:
            checked = policy.check_options(dict(opts))
        except ValueError as e:
            text = str(e)
            for k in opts:
                head = f"{name}.{k}: "
                if text.startswith(head):
                    raise SweepError(f"{path}.{name}.{k}", text[len(head):]) from None
            raise SweepError(f"{path}.{name}", text) from None
        choice = PolicyChoice(name, tuple(sorted((k, _freeze(checked[k])) for k in opts)))
        if choice.label in labels:
            raise SweepError(path, f"duplicate of policies[{labels[choice.label]}] ({choice.label})")
        labels[choice.label] = i
        out.append(choice)
    return tuple(out)


def _parse_replicates(raw: Any) -> int | Adaptive:
    wanted = "must be an integer >= 1 or {adaptive: {...}}"
    if isinstance(raw, bool) or raw is None or isinstance(raw, (float, list)):
        raise SweepError("replicates", f"{wanted}, got {raw!r}")
    if isinstance(raw, str):
        hint = ""
        try:
            x = float(raw)
        except ValueError:
            pass
        else:  # YAML 1.1 reads 1e12 as text; say what the number would be
            hint = (f" (YAML reads {raw} as text; write the integer {int(x)})" if math.isfinite(x) and x == int(x)
                    else f" (YAML reads {raw} as text)")
        raise SweepError("replicates", f"{wanted}, got the string {raw!r}{hint}")
    if isinstance(raw, int):
        if raw < 1:
            raise SweepError("replicates", f"must be >= 1, got {raw}")
        return raw
    raw = _mapping(raw, "replicates")
    prefix = "replicates"
    if "adaptive" in raw:
        _check_keys(raw, ("adaptive",), prefix)
        prefix = "replicates.adaptive"
        raw = _mapping(raw["adaptive"], prefix)
    _check_keys(raw, ADAPTIVE_KEYS, prefix)
    m = _validate(_AdaptiveModel, raw, prefix)
    if m.max < m.min:
        raise SweepError(f"{prefix}.max", f"must be >= min ({m.min}), got {m.max}")
    return Adaptive(ci_half_width=m.ci_half_width, min=m.min, max=m.max, batch=m.batch)


def _parse_mlflow(raw: Any, name: str) -> MlflowSpec:
    if raw is None:
        return MlflowSpec(experiment=name)
    _check_keys(_mapping(raw, "mlflow"), _MLFLOW_KEYS, "mlflow")
    m = _validate(_MlflowModel, raw, "mlflow")
    return MlflowSpec(experiment=m.experiment or name, max_cell_runs=m.max_cell_runs)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name) or ".." in name:
        raise SweepError(
            "name",
            f"{name!r} is not a valid sweep name: letters, digits, '_', '.', '-' (at most 100, starting "
            "with a letter or digit, no '..'); it names a directory under the output",
        )


def _check_observable(spec: SweepSpec, params: Mapping[str, Any], scenario: Mapping[str, Any]) -> None:
    """Refuse a cell whose horizon ends before a lockup could be declared.

    The detector (oommodel/detector.py) declares a lockup after `lockup_after_s` of simulated time
    without progress; with `horizon_s` <= `lockup_after_s` that can never happen, so every row would
    read "no lockup" however long the stall. Refused rather than censored: such a sweep measures
    nothing, and a null `lockup` column would have to be special-cased by every reader.
    """
    horizon, after = scenario.get("horizon_s"), scenario.get("lockup_after_s")
    if not isinstance(horizon, (int, float)) or not isinstance(after, (int, float)) or after < horizon:
        return
    key = next((k for k in ("horizon_s", "lockup_after_s") if k in params), None)
    if key is not None:
        where = f"grid.{key}" if key in spec.grid else f"sample.params.{key}"
        cell = ", ".join(f"{k}={v!r}" for k, v in params.items())
        lead = f"cell ({cell}): "
    else:
        where, lead = "base.horizon_s", ""
    raise SweepError(
        where,
        f"{lead}horizon_s ({horizon:g} s) must be greater than lockup_after_s ({after:g} s): a lockup is declared "
        f"only after lockup_after_s without progress, so within this horizon none could ever be seen and every "
        f"row would report no lockup",
    )


def _check_cells(spec: SweepSpec, canon, scenario_errors) -> None:
    """Validate every cell with the scenario schema; two cells may not be the same scenario."""
    seen: dict[str, dict] = {}
    for params in grid_points(spec):
        scenario = apply_params(spec.base, params)
        try:
            scenario = canon(scenario)
        except scenario_errors as e:
            sub, reason = _scenario_error_parts(e)
            key = next((k for k in params if sub == k or _is_prefix(k, sub)), None)
            where = f"grid.{key}" if key and key in spec.grid else (
                f"sample.params.{key}" if key else "grid"
            )
            cell = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise SweepError(where, f"cell ({cell}) is not a valid scenario: {sub or '(scenario)'}: {reason}") from None
        _check_observable(spec, params, scenario)
        text = canonical_json(scenario)
        if text in seen:
            a = ", ".join(f"{k}={v!r}" for k, v in seen[text].items())
            b = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise SweepError("grid", f"cells ({a}) and ({b}) are the same scenario")
        seen[text] = params


# ------------------------------------------------------------------ entry points


def parse_sweep(
    data: Any,
    base_dir: Path,
    source_text: str = "",
    *,
    check_cells: bool = True,
) -> SweepSpec:
    """Validate a sweep given as a plain dict (from YAML). Raises SweepError.

    Scenarios and policy options are checked by oommodel itself (Scenario, POLICIES), imported
    here, not at module import; `check_cells=False` skips validating every cell (a size check).
    """
    if not isinstance(data, Mapping):
        raise SweepError("", f"a sweep file must be a mapping of keys, got {type(data).__name__}")
    if "adaptive" in data:
        raise SweepError("adaptive", "unknown key: adaptive replication goes under replicates, as "
                         "replicates: {adaptive: {ci_half_width: 0.02, min: 30, max: 2000, batch: 30}}")
    _check_keys(data, TOP_LEVEL_KEYS, "")
    for key in _REQUIRED:
        if key not in data:
            raise SweepError(key, "required key is missing")
    top = _validate(_TopModel, dict(data), "")
    _check_name(top.name)

    canonicalize, load_scenario_file, scenario_errors = _scenario_api()
    registry = policy_registry()

    base = _parse_base(top.base, Path(base_dir), canonicalize, load_scenario_file, scenario_errors)
    grid = _parse_grid(top.grid, base)
    zipped = _parse_zip(top.zip, grid)
    sample = _parse_sample(top.sample, base, grid, top.seed)
    policies = _parse_policies(top.policies, registry)
    replicates = _parse_replicates(top.replicates)
    mlflow = _parse_mlflow(top.mlflow, top.name)
    spec = SweepSpec(
        name=top.name,
        base=base,
        grid=grid,
        zip=zipped,
        sample=sample,
        policies=policies,
        replicates=replicates,
        seed=top.seed,
        output=top.output,
        mlflow=mlflow,
        source_text=source_text,
    )
    if check_cells:
        _check_cells(spec, canonicalize, scenario_errors)
    return _with_hash(spec)


def _with_hash(spec: SweepSpec) -> SweepSpec:
    from dataclasses import replace

    return replace(spec, sweep_hash=spec.compute_hash())


MAX_YAML_BYTES = 4 * 1024 * 1024  # sweep and scenario files are kilobytes
MAX_YAML_NODES = 1_000_000  # after expanding aliases: stops "billion laughs" documents


def _expanded_nodes(data: Any, where: str) -> int:
    """Nodes the document would have with every alias expanded (memoised, so it is fast on bombs).

    yaml.safe_load shares aliased objects, so a billion-laughs file loads quickly
    but explodes in whatever walks it next (validation, hashing, JSON).
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(obj: Any) -> int:
        if isinstance(obj, dict):
            children = [*obj.keys(), *obj.values()]
        elif isinstance(obj, list):
            children = obj
        else:
            return 1
        key = id(obj)
        if key in memo:
            return memo[key]
        if key in active:
            raise SweepError("", f"{where}: recursive YAML alias (a node that contains itself)")
        active.add(key)
        total = 1
        for c in children:
            total += size(c)
            if total > MAX_YAML_NODES:
                break
        active.discard(key)
        memo[key] = total
        return total

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10_000))
    try:
        return size(data)
    except RecursionError:
        raise SweepError("", f"{where}: YAML nested too deeply") from None
    finally:
        sys.setrecursionlimit(old)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: yaml.Mark, second: yaml.Mark) -> None:
        where = (f"on line {first.line + 1} and on line {second.line + 1}" if first.line != second.line
                 else f"twice on line {first.line + 1} (columns {first.column + 1} and {second.column + 1})")
        super().__init__(f"key {key!r} is given twice, {where}; a key may appear once per mapping")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:  # the node's own keys: a `<<` merge may be overridden
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise _DuplicateKey(key, seen[key], key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def safe_yaml(text: str, where: str) -> Any:
    """yaml.safe_load (no Python tags) with limits on size, nesting and alias expansion.

    A key given twice in one mapping is refused with both line numbers (PyYAML would keep the last).
    """
    if len(text) > MAX_YAML_BYTES:
        raise SweepError("", f"{where}: file is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise SweepError("", f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise SweepError("", f"{where}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise SweepError("", f"{where}: YAML nested too deeply") from None
    if _expanded_nodes(data, where) > MAX_YAML_NODES:
        raise SweepError(
            "", f"{where}: the document expands to more than {MAX_YAML_NODES} nodes through aliases; refused"
        )
    return data


def _check_scenario_file(path: Path) -> None:
    """The same YAML limits for a `base:` scenario file before oommodel loads it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError("base", f"cannot read scenario file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        safe_yaml(text, str(path))
    except SweepError as e:
        raise SweepError("base", e.reason) from None


def load_sweep(path: str | Path, **hooks: Any) -> SweepSpec:
    """Read and validate a sweep YAML file; a relative ``base:`` path is resolved against its directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SweepError("", f"cannot read sweep file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SweepError("", f"{p}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    data = safe_yaml(text, str(p))
    if data is None:
        raise SweepError("", f"{p}: empty sweep file")
    return parse_sweep(data, p.resolve().parent, text, **hooks)

"""Key paths into a scenario dict: ``machine.cpus``, ``groups[0].sched.rt_priority`` (pure).

A path must already exist in the canonical base scenario (defaults filled), so a misspelt key is an
error naming the closest existing key, not a silent no-op.  Used by the sweep file's validation
(`sweeps.spec.parse`) and by grid expansion (`sweeps.spec.grid`).
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any, Sequence

from sweeps.errors import SweepError

__all__ = ["parse_path", "format_path", "key_paths", "closest_key", "get_path", "set_path", "apply_params"]

_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|(\.)")


def _error(path: str, message: str) -> Exception:
    return SweepError(path, message)


def parse_path(key: str) -> tuple[str | int, ...]:
    """"groups[0].sched.nice" -> ("groups", 0, "sched", "nice"); SweepError on bad syntax."""
    if not isinstance(key, str) or not key:
        raise _error(str(key), "key path must be a non-empty string")
    parts: list[str | int] = []
    pos = 0
    expect_name = True
    while pos < len(key):
        m = _TOKEN.match(key, pos)
        if m is None:
            raise _error(key, f"bad key path syntax at character {pos + 1} ({key[pos]!r})")
        name, index, dot = m.groups()
        if name is not None:
            if not expect_name:
                raise _error(key, f"bad key path syntax at character {pos + 1} (missing '.')")
            parts.append(name)
            expect_name = False
        elif index is not None:
            if expect_name:
                raise _error(key, f"bad key path syntax at character {pos + 1} (index without a key)")
            parts.append(int(index))
        else:
            if expect_name:
                raise _error(key, f"bad key path syntax at character {pos + 1} (empty key)")
            expect_name = True
        pos = m.end()
    if expect_name:
        raise _error(key, "bad key path syntax (ends with '.')")
    return tuple(parts)


def format_path(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out


def key_paths(d: Any, prefix: tuple[str | int, ...] = ()) -> list[str]:
    """Every key path of a nested dict/list, inner nodes included (a grid may vary a whole sub-dict)."""
    out: list[str] = []
    if isinstance(d, dict):
        for k, v in d.items():
            p = prefix + (str(k),)
            out.append(format_path(p))
            out.extend(key_paths(v, p))
    elif isinstance(d, list) and prefix:
        for i, v in enumerate(d):
            p = prefix + (i,)
            out.append(format_path(p))
            out.extend(key_paths(v, p))
    return out


def closest_key(d: dict, key: str) -> str | None:
    """The existing key path closest to ``key`` (difflib), or None."""
    matches = difflib.get_close_matches(key, key_paths(d), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _missing(d: dict, key: str, prefix: str, what: str) -> Exception:
    hint = closest_key(d, key)
    suffix = f" (did you mean '{hint}'?)" if hint else ""
    return _error(prefix + key, f"{what}{suffix}")


def _walk(d: Any, parts: tuple[str | int, ...], key: str, prefix: str) -> Any:
    node = d
    for p in parts:
        if isinstance(p, int):
            if not isinstance(node, list) or p >= len(node):
                raise _missing(d, key, prefix, "no such scenario key")
            node = node[p]
        else:
            if not isinstance(node, dict) or p not in node:
                raise _missing(d, key, prefix, "no such scenario key")
            node = node[p]
    return node


def get_path(d: dict, key: str, *, prefix: str = "") -> Any:
    """Value at a key path; SweepError naming the key (and the closest existing key) if absent.

    ``prefix`` is prepended to the path in errors (e.g. "grid.").
    """
    return _walk(d, parse_path(key), key, prefix)


def set_path(d: dict, key: str, value: Any, *, prefix: str = "") -> dict:
    """A deep copy of ``d`` with ``value`` at ``key``; the key must exist already (SweepError if not)."""
    parts = parse_path(key)
    out = copy.deepcopy(d)
    parent = _walk(out, parts[:-1], key, prefix)
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(parent, list) or last >= len(parent):
            raise _missing(d, key, prefix, "no such scenario key")
    elif not isinstance(parent, dict) or last not in parent:
        raise _missing(d, key, prefix, "no such scenario key")
    parent[last] = copy.deepcopy(value)
    return out


def apply_params(base: dict, params: dict[str, Any], *, prefix: str = "grid.") -> dict:
    """A copy of ``base`` with every (key path -> value) of ``params`` set; one copy, not one per key."""
    out = copy.deepcopy(base)
    for key, value in params.items():
        parts = parse_path(key)
        parent = _walk(out, parts[:-1], key, prefix)
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(parent, list) or last >= len(parent):
                raise _missing(out, key, prefix, "no such scenario key")
        elif not isinstance(parent, dict) or last not in parent:
            raise _missing(out, key, prefix, "no such scenario key")
        parent[last] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
    return out

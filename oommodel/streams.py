"""Named random streams for common random numbers.

Every random draw of a run comes from a stream named after what it is for, e.g.
``streams.rng("start_s", "children", 17)``.  The stream depends only on the seed and the
name, so two policies run with one seed see the same start times and costs, and a policy
that draws once more from its own stream does not shift anybody else's draws.

The name is hashed with SHA-256 (not Python's salted ``hash()``) into the ``spawn_key`` of a
``numpy.random.SeedSequence``: the same (seed, name) gives the same draws on every machine
and in every process.  Nothing is cached at module or class level.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from numbers import Integral

import numpy as np

from oommodel.distributions import Dist

__all__ = ["Streams", "stream_key"]

NamePart = str | int


# JSON escapes only '"', '\\' and control characters when ensure_ascii=False: a part without
# them encodes as itself in quotes, so the common names skip json.dumps (same bytes).
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_WORDS = struct.Struct("<4I")


def _encode(name_parts: tuple[NamePart, ...]) -> str:
    """``json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)`` with str/int
    parts already checked; plain strings and ints are formatted directly."""
    out = []
    for p in name_parts:
        if type(p) is int:
            out.append(str(p))
        elif type(p) is str and _NEEDS_ESCAPE.search(p) is None:
            out.append('"' + p + '"')
        else:
            out.append(json.dumps(p if isinstance(p, str) else int(p), ensure_ascii=False))
    return "[" + ",".join(out) + "]"


def stream_key(*name_parts: NamePart) -> tuple[int, ...]:
    """Stable 128-bit spawn key (four uint32 words) for a stream name.

    Parts are encoded as JSON, so ``("a", 1)`` and ``("a", "1")`` and ``("a1",)`` differ.
    """
    if not name_parts:
        raise ValueError("a stream needs a name")
    for part in name_parts:
        if isinstance(part, bool) or not isinstance(part, (str, Integral)):
            raise TypeError(f"stream name parts must be str or int, got {type(part).__name__} {part!r}")
    digest = hashlib.sha256(_encode(name_parts).encode()).digest()
    return _WORDS.unpack_from(digest)


def _uint32_words(n: int) -> np.ndarray:
    """n >= 0 as little-endian uint32 words, [0] for 0 (numpy's `_int_to_uint32_array`)."""
    words = []
    while True:
        words.append(n & 0xFFFFFFFF)
        n >>= 32
        if n == 0:
            return np.array(words, dtype=np.uint32)


class Streams:
    """A seed's family of independent, named random streams."""

    __slots__ = ("_seed", "_entropy")

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self._seed = int(seed)
        self._entropy = _uint32_words(self._seed)

    @property
    def seed(self) -> int:
        return self._seed

    def rng(self, *name_parts: NamePart) -> np.random.Generator:
        """A fresh Generator for this name: each call restarts the same sequence."""
        # Same words as SeedSequence(seed, spawn_key=stream_key(...)) would derive from the
        # ints (one uint32 per key word, the seed in little-endian 32-bit words), handed over
        # as uint32 arrays: that skips SeedSequence's per-int conversion, the slow part of a
        # new stream. tests/model/test_streams.py checks the draws against the int form.
        key = np.array(stream_key(*name_parts), dtype=np.uint32)
        ss = np.random.SeedSequence(self._entropy, spawn_key=(key,))
        return np.random.Generator(np.random.PCG64(ss))

    def uniform(self, *name_parts: NamePart) -> float:
        """One U[0, 1) draw from the stream of this name (the first of its sequence)."""
        return float(self.rng(*name_parts).random())

    def draw(self, value: float | str | Dist, *name_parts: NamePart) -> float | str:
        """``sample(value, self.rng(*name_parts))``; plain values skip building a Generator."""
        if isinstance(value, Dist):
            return value.sample(self.rng(*name_parts))
        return value

    def __repr__(self) -> str:
        return f"Streams(seed={self._seed})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Streams) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(("Streams", self._seed))

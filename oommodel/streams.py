"""Named random streams for common random numbers.

Every random draw of a run comes from a stream named after what it is for, e.g.
``streams.rng("start_s", "children", 17)``.  The stream depends only on the seed and the
name, so two policies run with one seed see the same start times and costs, and a policy
that draws once more from its own stream does not shift anybody else's draws.

The name is hashed with SHA-256 (not Python's salted ``hash()``) into the ``spawn_key`` of a
``numpy.random.SeedSequence``: the same (seed, name) gives the same draws on every machine
and in every process.

Draws used at once (``draw``, ``uniform``, ``at_start``) skip building a SeedSequence, a PCG64
and a Generator per stream (~35 us, a tenth of a Handa run): the SeedSequence hashing of
numpy/random/bit_generator.pyx and PCG64's seeding are done here on Python ints and the result
is set as the state of one bit generator per ``Streams``. tests/model/test_streams.py checks
them against numpy's. The one module-level cache is ``_name_hashes``: the name's share of that
hashing, a pure function of an immutable name (str and int parts), so it cannot carry anything
from one run to another; it is bounded.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from functools import lru_cache
from numbers import Integral

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence

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


# numpy.random.SeedSequence's hashing constants (numpy/random/bit_generator.pyx, pool size 4)
# and PCG64's 128-bit LCG multiplier (numpy/random/src/pcg64/pcg64.h).
_M32 = 0xFFFFFFFF
_M128 = (1 << 128) - 1
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_PCG64_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_POOL = 4


def _hash_consts(init: int, mult: int, n: int) -> tuple[tuple[int, int], ...]:
    """hashmix()'s (xor, multiplier) pairs in call order: its hash_const sequence, data-independent."""
    out = []
    h = init
    for _ in range(n):
        nxt = (h * mult) & _M32
        out.append((h, nxt))
        h = nxt
    return tuple(out)


# mix_entropy(): 4 pool words, 12 pool cross-mixes, then 4 per spawn-key word (4 words)
_HASH_A = _hash_consts(_INIT_A, _MULT_A, _POOL + _POOL * (_POOL - 1) + 4 * _POOL)
_HASH_B = _hash_consts(_INIT_B, _MULT_B, 8)    # generate_state(4, uint64): 8 uint32 words


def _hashmix(value: int, consts: tuple[int, int]) -> int:
    x, m = consts
    value = ((value ^ x) * m) & _M32
    return value ^ (value >> 16)


def _mix(x: int, y: int) -> int:
    r = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _M32
    return r ^ (r >> 16)


def _run_pool(seed: int) -> tuple[int, int, int, int] | None:
    """SeedSequence.mix_entropy() over the seed's words, up to the spawn key: the pool every
    stream of this seed starts from (numpy pads the run entropy to 4 words when a spawn key
    follows). None for a seed above 128 bits, whose extra words numpy mixes in first."""
    words = _uint32_words(seed).tolist()
    if len(words) > _POOL:
        return None
    words += [0] * (_POOL - len(words))
    pool = [_hashmix(words[i], _HASH_A[i]) for i in range(_POOL)]
    k = _POOL
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hashmix(pool[src], _HASH_A[k]))
                k += 1
    return pool[0], pool[1], pool[2], pool[3]


@lru_cache(maxsize=4096, typed=True)    # typed: ("a", True) must still fail as stream_key does
def _name_hashes(*name_parts: NamePart) -> tuple[int, ...]:
    """hashmix() of the name's four spawn-key words, in mix_entropy()'s order, each multiplied by
    _mix()'s right-hand constant (the part of each _mix() that depends on the name only): depends
    on the name only (see the module docstring for why this cache is harmless)."""
    base = _POOL + _POOL * (_POOL - 1)
    out = []
    for i, word in enumerate(stream_key(*name_parts)):
        for dst in range(_POOL):
            out.append(_MIX_MULT_R * _hashmix(word, _HASH_A[base + i * _POOL + dst]))
    return tuple(out)


def _pcg64_state(pool: tuple[int, int, int, int], hashes: tuple[int, ...]) -> tuple[int, int]:
    """`PCG64(SeedSequence(seed, spawn_key=(key,)))`'s (state, inc): the rest of mix_entropy(),
    generate_state(4, np.uint64), then pcg64_set_seed() -> pcg_setseq_128_srandom_r()."""
    # _mix() and _hashmix() written out, the four pool words in locals: this runs for every
    # draw, and the calls and indexing cost as much as the sums. `hashes` are _name_hashes().
    mask, mul_l = _M32, _MIX_MULT_L
    p0, p1, p2, p3 = pool
    for i in range(0, 4 * _POOL, _POOL):       # each spawn-key word mixes into pool words 0..3
        r = (mul_l * p0 - hashes[i]) & mask
        p0 = r ^ (r >> 16)
        r = (mul_l * p1 - hashes[i + 1]) & mask
        p1 = r ^ (r >> 16)
        r = (mul_l * p2 - hashes[i + 2]) & mask
        p2 = r ^ (r >> 16)
        r = (mul_l * p3 - hashes[i + 3]) & mask
        p3 = r ^ (r >> 16)
    w = []
    for p, (x, m) in zip((p0, p1, p2, p3, p0, p1, p2, p3), _HASH_B):
        v = ((p ^ x) * m) & mask
        w.append(v ^ (v >> 16))
    seed = (w[0] | w[1] << 32) << 64 | (w[2] | w[3] << 32)     # PCG_128BIT_CONSTANT(val[0], val[1])
    inc = (((w[4] | w[5] << 32) << 64 | (w[6] | w[7] << 32)) << 1 | 1) & _M128
    state = ((inc + seed) * _PCG64_MULT + inc) & _M128        # srandom_r: step, += seed, step
    return state, inc


class Streams:
    """A seed's family of independent, named random streams."""

    __slots__ = ("_seed", "_entropy", "_pool", "_scratch")

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self._seed = int(seed)
        self._entropy = _uint32_words(self._seed)
        self._pool = _run_pool(self._seed)
        self._scratch: Generator | None = None

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
        ss = SeedSequence(self._entropy, spawn_key=(key,))
        return Generator(PCG64(ss))

    def at_start(self, *name_parts: NamePart) -> Generator:
        """This name's stream at its start, as `rng()` gives it, for draws made at once: the one
        Generator of this Streams, re-seeded by every call (never keep it across calls)."""
        pool = self._pool
        if pool is None:
            return self.rng(*name_parts)
        state, inc = _pcg64_state(pool, _name_hashes(*name_parts))
        gen = self._scratch
        if gen is None:
            gen = self._scratch = Generator(PCG64(0))
        gen.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                                   "has_uint32": 0, "uinteger": 0}
        return gen

    def uniform(self, *name_parts: NamePart) -> float:
        """One U[0, 1) draw from the stream of this name (the first of its sequence)."""
        return float(self.at_start(*name_parts).random())

    def draw(self, value: float | str | Dist, *name_parts: NamePart) -> float | str:
        """``sample(value, self.rng(*name_parts))``; plain values skip the stream altogether."""
        if isinstance(value, Dist):
            return value.sample(self.at_start(*name_parts))
        return value

    def __repr__(self) -> str:
        return f"Streams(seed={self._seed})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Streams) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(("Streams", self._seed))

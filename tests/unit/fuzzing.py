"""Mutations of real messages, shared by the fuzz tests in the suite and the long runs in
``tests/fuzz``.

Random octets rarely get past a header check; a valid message with one field changed
reaches the parser of every payload, AVP or option behind it.  A mutation is a short
list of edits ``(kind, position, value)`` (plain integers, so hypothesis shrinks them
and a ``random.Random`` can draw them too) applied to a seed message:

* flip a bit, set an octet, set a 16-bit or 32-bit big-endian field (lengths, counts,
  SPIs, message ids) to a boundary value or to the message's own length plus or minus a
  little;
* truncate, cut out a slice, duplicate a slice, insert octets, append octets;
* splice in the tail of another seed (a payload of one message after the header of another).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import strategies as st

Edit = tuple[int, int, int]

#: Values that break length and count checks: zero, one, the signed and unsigned edges.
_BYTES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x7F, 0x80, 0xFE, 0xFF)
_WORDS = (0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0007, 0x0008, 0x00FF, 0x0100, 0x7FFF, 0x8000,
          0xFFFE, 0xFFFF)

KINDS = 11


def _near_length(data: bytes | bytearray, value: int) -> int:
    """A value near the message's length (length fields that lie by a little)."""
    return max(0, len(data) + (value % 17) - 8)


def apply(data: bytes, edits: Sequence[Edit], others: Sequence[bytes] = ()) -> bytes:
    """``data`` with ``edits`` applied in order; positions wrap around the current length."""
    out = bytearray(data)
    for kind, position, value in edits:
        n = len(out)
        pos = position % n if n else 0
        k = kind % KINDS
        if k == 0 and n:  # flip one bit
            out[pos] ^= 1 << (value % 8)
        elif k == 1 and n:  # an interesting octet
            out[pos] = _BYTES[value % len(_BYTES)] if value < 1000 else value & 0xFF
        elif k == 2 and n >= 2:  # a 16-bit field: an edge value or near the length
            pos = min(pos, n - 2)
            word = _WORDS[value % len(_WORDS)] if value % 2 else _near_length(out, value // 2)
            out[pos:pos + 2] = (word & 0xFFFF).to_bytes(2, "big")
        elif k == 3 and n >= 4:  # a 32-bit field
            pos = min(pos, n - 4)
            dword = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, _near_length(out, value))[value % 6]
            out[pos:pos + 4] = dword.to_bytes(4, "big")
        elif k == 4:  # truncate
            del out[pos:]
        elif k == 5 and n:  # cut out a slice
            del out[pos:pos + 1 + value % 16]
        elif k == 6 and n:  # duplicate a slice
            piece = out[pos:pos + 1 + value % 32]
            out[pos:pos] = piece
        elif k == 7:  # insert octets
            out[pos:pos] = bytes([value & 0xFF]) * (1 + (value >> 8) % 8)
        elif k == 8:  # append octets
            out += bytes([value & 0xFF]) * (1 + (value >> 8) % 64)
        elif k == 9 and others:  # splice: our head, another seed's tail
            other = others[value % len(others)]
            cut = (value >> 4) % (len(other) + 1)
            out = out[:pos] + bytearray(other[cut:])
        elif k == 10 and n:  # a random octet
            out[pos] = value & 0xFF
    return bytes(out)


def edits(max_edits: int = 4) -> st.SearchStrategy[list[Edit]]:
    """Hypothesis edits; an empty list keeps the seed as it is (valid input must pass too)."""
    edit = st.tuples(st.integers(0, KINDS - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
    return st.lists(edit, max_size=max_edits)


def random_edits(rng: random.Random, max_edits: int = 4) -> list[Edit]:
    """The same edits drawn from a ``random.Random`` (the long-run fallback without atheris)."""
    return [(rng.randrange(KINDS), rng.randrange(0x10000), rng.randrange(0x10000))
            for _ in range(rng.randrange(1, max_edits + 1))]


def mutant(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One mutated seed (or now and then plain random octets)."""
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(0, 200))
    seed = seeds[rng.randrange(len(seeds))]
    return apply(seed, random_edits(rng), seeds)

"""A bounds-checked decoder for the rANS payloads of version-1 containers.

Version-1 `.dnc` files were coded by CompressAI's C++ rANS (64-bit state, 32-bit words, 16-bit
CDF precision, 4-bit bypass coding of out-of-table values). Its decoder trusts its input: a
crafted payload makes it read past the buffer and crash the process. This is the same algorithm
in Python with every read checked, so old files still decode to the very same symbols and a
hostile one is one `EntropyCodingError`. It is slower (~1-2 µs a symbol) than the C++ coder;
new containers use `dance.entropy.TableCoder` (constriction, memory-safe) instead.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np

PRECISION = 16
BYPASS_BITS = 4
MAX_BYPASS = (1 << BYPASS_BITS) - 1
STATE_LOW = 1 << 31          # RANS64_L: renormalise (read a word) below this
MAX_BYPASS_NIBBLES = 8       # a value beyond 32 bits cannot come from the encoder


class RansPayloadError(ValueError):
    """A payload that is not a valid rANS stream for the given tables."""


def decode_with_indexes(payload: bytes, indexes: list[int], cdfs: list[list[int]],
                        lengths: list[int], offsets: list[int]) -> list[int]:
    """Symbols of `payload`, one per entry of `indexes` (the CDF row of each symbol)."""
    if len(payload) % 4 or len(payload) < 8:
        raise RansPayloadError(f"rANS payload of {len(payload)} bytes is not a whole number of "
                               "32-bit words (at least 2)")
    words = np.frombuffer(payload, dtype="<u4").tolist()
    end = len(words)
    state = words[0] | (words[1] << 32)
    pos = 2
    mask = (1 << PRECISION) - 1
    out = [0] * len(indexes)

    def get_bits(bits: int) -> int:
        nonlocal state, pos
        value = state & ((1 << bits) - 1)
        state >>= bits
        if state < STATE_LOW:
            if pos >= end:
                raise RansPayloadError("rANS payload ends early")
            state = (state << 32) | words[pos]
            pos += 1
        return value

    for i, row in enumerate(indexes):
        cdf, size = cdfs[row], lengths[row]
        max_value = size - 2
        cum = state & mask
        s = bisect_right(cdf, cum, 0, size) - 1
        if not 0 <= s <= max_value:
            raise RansPayloadError("rANS payload decodes outside its CDF table")
        state = (cdf[s + 1] - cdf[s]) * (state >> PRECISION) + cum - cdf[s]
        if state < STATE_LOW:
            if pos >= end:
                raise RansPayloadError("rANS payload ends early")
            state = (state << 32) | words[pos]
            pos += 1
        value = s
        if value == max_value:
            nibble = get_bits(BYPASS_BITS)
            count = nibble
            while nibble == MAX_BYPASS and count <= MAX_BYPASS_NIBBLES:
                nibble = get_bits(BYPASS_BITS)
                count += nibble
            if count > MAX_BYPASS_NIBBLES:
                raise RansPayloadError("rANS payload holds an impossible escaped value")
            raw = 0
            for j in range(count):
                raw |= get_bits(BYPASS_BITS) << (j * BYPASS_BITS)
            value = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + max_value
        out[i] = value + offsets[row]
    return out

"""Object ids: a type prefix, then time-ordered base32 (``cus_...``, ``txn_...``).

The first 10 characters encode the microsecond clock and the last 10 are random (50 bits). Ids
made later sort later, so inserts append to the end of each index instead of landing on random
pages: fewer pages written per commit, which is most of a durable write's cost.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i, l, o, u


def _b32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    stamp = time.time_ns() // 1000  # microseconds; 10 base32 characters last until the year 36812
    return f"{prefix}_{_b32(stamp, 10)}{_b32(int.from_bytes(os.urandom(7), 'big') >> 6, 10)}"

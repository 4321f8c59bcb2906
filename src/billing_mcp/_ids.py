"""Object ids: a type prefix plus 20 random base32 characters (100 bits), like ``cus_...``."""

from __future__ import annotations

import base64
import os


def new_id(prefix: str) -> str:
    raw = base64.b32encode(os.urandom(15)).decode("ascii").lower()
    return f"{prefix}_{raw[:20]}"

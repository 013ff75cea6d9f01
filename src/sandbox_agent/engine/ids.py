"""Process ids: opaque, URL-safe, ordered by creation, never reused.

An id is 26 characters of lowercase Crockford base32: 48 bits of milliseconds since the
epoch, then 80 bits that are random for the first id of a millisecond and counted up
from there, so ids sort in creation order within one server and a deleted id never
comes back.
"""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_PATTERN = re.compile(r"[0-9a-hjkmnp-tv-z]{26}")
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id() -> str:
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
        _last = (ms, rand)
    return _encode(ms, 10) + _encode(rand, 16)


def unknown_id_detail(value: str) -> str:
    """What to tell a caller about an id that names no process, whatever its shape."""
    if ID_PATTERN.fullmatch(value):
        return f"no process with id {value}; list the processes to see the ids there are"
    return (
        f"no process with id {value!r}, which is not a process id: ids are the 26 lowercase letters and "
        "digits a start answers with; list the processes to see the ids there are"
    )

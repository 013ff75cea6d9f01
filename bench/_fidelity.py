"""Fidelity: do the logged lines, prefixes removed, equal byte for byte what the child wrote?"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import _gen

#: Our ``[2026-01-30T12:32:45.123Z] `` and pm2's ``--time`` ``2026-01-30T12:32:45: ``.
OURS_PREFIX = re.compile(rb"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] ")
PM2_PREFIX = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d: ")
_CONTENT = _gen.LINE_LEN - 1


@dataclass
class Fidelity:
    expected: int
    lines: int = 0
    lost: int = 0
    corrupted: int = 0
    duplicated: int = 0

    @property
    def exact(self) -> bool:
        return self.lines == self.expected and not (self.lost or self.corrupted or self.duplicated)

    def describe(self) -> str:
        if self.exact:
            return "exact"
        parts = [f"lost {self.lost}", f"corrupt {self.corrupted}"]
        if self.duplicated:
            parts.append(f"dup {self.duplicated}")
        return ", ".join(parts) + f" of {self.expected}"


def expected_output(count: int) -> bytes:
    return b"".join(_gen.blocks(count))


def check(data: bytes, expected: bytes, count: int, prefix: re.Pattern[bytes] | None) -> Fidelity:
    """Compare a log (``data``) with the generator's ``expected`` output of ``count`` lines."""
    width = (prefix_len(prefix) or 0) + _gen.LINE_LEN
    if len(data) == count * width and _columns_match(data, expected, width, prefix):
        return Fidelity(expected=count, lines=count)
    return _line_by_line(data, count, prefix)


def prefix_len(prefix: re.Pattern[bytes] | None) -> int:
    if prefix is None:
        return 0
    return {OURS_PREFIX.pattern: 27, PM2_PREFIX.pattern: 21}[prefix.pattern]


def _columns_match(data: bytes, expected: bytes, width: int, prefix: re.Pattern[bytes] | None) -> bool:
    # Every line has the same length here: compare the file column by column (strided
    # slices run at C speed), which is ten times faster than splitting two million lines.
    # Chunks of a few thousand lines stay in the cache while their columns are sliced.
    skip = width - _gen.LINE_LEN
    chunk = 4096
    for first in range(0, len(expected) // _gen.LINE_LEN, chunk):
        got = data[first * width : (first + chunk) * width]
        want = expected[first * _gen.LINE_LEN : (first + chunk) * _gen.LINE_LEN]
        for column in range(_gen.LINE_LEN):
            if got[skip + column :: width] != want[column :: _gen.LINE_LEN]:
                return False
    if prefix is not None:
        step = max(1, len(data) // width // 2000) * width
        for start in range(0, len(data), step):
            if not prefix.fullmatch(data, start, start + skip):
                return False
    return True


def _line_by_line(data: bytes, count: int, prefix: re.Pattern[bytes] | None) -> Fidelity:
    result = Fidelity(expected=count)
    seen = bytearray(count)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    skip = prefix_len(prefix)
    for line in lines:
        result.lines += 1
        if prefix is not None and not prefix.match(line):
            result.corrupted += 1
            continue
        content = line[skip:]
        head = content[:10]
        if len(content) == _CONTENT and head.isdigit():
            index = int(head)
            if index < count and _gen.expected_line(index)[:-1] == content:
                if seen[index]:
                    result.duplicated += 1
                else:
                    seen[index] = 1
                continue
        result.corrupted += 1
    result.lost = count - sum(seen)
    return result

"""Output generators run as the managed process in the benchmarks. Standard library only.

Run by path, so that every system under test (ours, the floor, supervisord, pm2) starts
the very same program::

    python bench/_gen.py bulk 2000000           # 100-byte lines, written in 1 MB blocks
    python bench/_gen.py bulk 2000000 DONE_FILE # the same; DONE_FILE gets "START END" (monotonic)
    python bench/_gen.py lines 1000000          # the same lines, one write(2) per line
    python bench/_gen.py clock 5 0.01           # time.time() every 10 ms for 5 s
    python bench/_gen.py clock 5 0.01 GO_FILE   # the same, once GO_FILE exists
    python bench/_gen.py rate 5000 10 GO_FILE   # 5,000 numbered lines/s for 10 s, once GO_FILE exists

Line ``i`` of ``bulk``/``lines`` is ``%010d`` of ``i``, a space and 88 filler bytes that
depend on ``i``, so that a lost, repeated or torn line is visible. The benchmark builds
the same bytes with ``blocks()`` to check what reached the logs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

LINE_LEN = 100
BLOCK_LINES = 10_000
_FILLERS = [bytes((97 + (k + j) % 26) for j in range(LINE_LEN - 12)) for k in range(26)]
_HIGH = b"HHHHHH"


def _template() -> bytes:
    # One block of lines whose six high digits are a placeholder: a block is then one
    # C-speed replace away, so that the generator writes far faster than any reader.
    return b"".join(_HIGH + b"%04d " % j + _FILLERS[j % 26] + b"\n" for j in range(BLOCK_LINES))


def blocks(count: int) -> Iterator[bytes]:
    """The exact output of ``bulk count`` / ``lines count``, one block at a time."""
    template = _template()
    done = 0
    block = 0
    while done < count:
        data = template.replace(_HIGH, b"%06d" % block)
        take = min(BLOCK_LINES, count - done)
        yield data if take == BLOCK_LINES else data[: take * LINE_LEN]
        done += take
        block += 1


def expected_line(index: int) -> bytes:
    return b"%010d " % index + _FILLERS[(index % BLOCK_LINES) % 26] + b"\n"


def _write_all(data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def bulk(count: int, done_file: str | None = None) -> None:
    start = time.monotonic()
    for data in blocks(count):
        _write_all(data)
    if done_file is not None:
        # Before the first block and when the last write returned (CLOCK_MONOTONIC is
        # system-wide: the benchmark compares it with its own time.monotonic()).
        done = b"%.6f %.6f" % (start, time.monotonic())
        with open(done_file + ".tmp", "wb") as f:
            f.write(done)
        os.rename(done_file + ".tmp", done_file)


def lines(count: int) -> None:
    write = os.write
    for data in blocks(count):
        for line in data.splitlines(keepends=True):
            write(1, line)  # one flushed write per line: a chatty program


def _wait_for(go_file: str | None) -> None:
    while go_file is not None and not os.path.exists(go_file):
        time.sleep(0.005)


def clock(seconds: float, interval: float, go_file: str | None = None) -> None:
    _wait_for(go_file)
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while next_at < end:
        os.write(1, b"%.6f\n" % time.time())
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def rate(per_second: int, seconds: float, go_file: str) -> None:
    # Evenly paced, one write per line: the steady chatty producer, and the worst case
    # for a reader that wakes per write (no two lines arrive in the same read).
    _wait_for(go_file)
    total = int(per_second * seconds)
    interval = 1 / per_second
    pad = b"x" * 50
    start = time.monotonic()
    for sent in range(total):
        delay = start + sent * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.write(1, b"%08d %s\n" % (sent, pad))


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "bulk":
        bulk(int(argv[1]), argv[2] if len(argv) > 2 else None)
    elif mode == "lines":
        lines(int(argv[1]))
    elif mode == "clock":
        clock(float(argv[1]), float(argv[2]), argv[3] if len(argv) > 3 else None)
    elif mode == "rate":
        rate(int(argv[1]), float(argv[2]), argv[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

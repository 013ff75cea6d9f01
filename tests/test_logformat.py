"""The log line format and the supervisor's line splitting, driven on real files."""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from sandbox_agent.supervisor import capture as _supervisor
from sandbox_agent.supervisor.capture import MAX_LINE
from sandbox_agent.supervisor.capture import CombinedWriter as _CombinedWriter
from sandbox_agent.supervisor.capture import LogFile as _LogFile
from sandbox_agent.supervisor.capture import Stream as _Stream
from sandbox_agent.supervisor.ondisk import TIMESTAMP_PREFIX_LEN, format_timestamp
from sandbox_agent.supervisor.ondisk import Clock as _Clock

STAMP = re.compile(rb"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] ")


class Logs:
    def __init__(self, tmp_path: Path) -> None:
        self.stdout = tmp_path / "stdout.log"
        self.combined = tmp_path / "combined.log"
        self.fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND) for p in (self.stdout, self.combined)]
        self.combined_writer = _CombinedWriter(_LogFile(self.fds[1]))
        self.stream = _Stream("stdout", -1, _LogFile(self.fds[0]), self.combined_writer)
        self.clock = _Clock()

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)

    def lines(self, which: str = "stdout") -> list[bytes]:
        self.combined_writer.flush()
        return (self.stdout if which == "stdout" else self.combined).read_bytes().splitlines(keepends=True)


@pytest.fixture
def logs(tmp_path: Path) -> Logs:
    result = Logs(tmp_path)
    yield result
    result.close()


def test_timestamp_is_utc_rfc3339_with_exactly_milliseconds() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(1769776365.1239) == "2026-01-30T12:32:45.123Z"
    assert format_timestamp(1769776365.9999) == "2026-01-30T12:32:45.999Z"
    prefix = _Clock().prefix(time.time())
    assert len(prefix) == TIMESTAMP_PREFIX_LEN
    assert STAMP.fullmatch(prefix)


def test_each_line_gets_a_prefix_and_combined_gets_the_tag(logs: Logs) -> None:
    logs.stream.feed(b"one\ntwo\n", 1769776365.5, logs.clock)
    assert logs.lines() == [b"[2026-01-30T12:32:45.500Z] one\n", b"[2026-01-30T12:32:45.500Z] two\n"]
    assert logs.lines("combined") == [
        b"[2026-01-30T12:32:45.500Z] [stdout] one\n",
        b"[2026-01-30T12:32:45.500Z] [stdout] two\n",
    ]


def test_bytes_are_kept_as_written(logs: Logs) -> None:
    raw = b"caf\xc3\xa9 \xff\xfe invalid \x00 nul \x1b[31mred\x1b[0m\r\n"
    logs.stream.feed(raw, 100.0, logs.clock)
    (line,) = logs.lines()
    assert line[TIMESTAMP_PREFIX_LEN:] == raw


def test_a_partial_line_waits_then_is_written_and_what_follows_is_a_new_line(logs: Logs) -> None:
    logs.stream.feed(b"Password: ", 100.0, logs.clock)
    assert logs.lines() == []
    assert logs.stream.pending == b"Password: "
    logs.stream.flush_partial(100.2, logs.clock)
    logs.stream.feed(b"hunter2\n", 100.3, logs.clock)
    assert [line[TIMESTAMP_PREFIX_LEN:] for line in logs.lines()] == [b"Password: \n", b"hunter2\n"]
    assert logs.lines()[0].startswith(b"[1970-01-01T00:01:40.200Z]")
    assert logs.lines()[1].startswith(b"[1970-01-01T00:01:40.300Z]")


def test_a_line_split_across_reads_is_one_line(logs: Logs) -> None:
    logs.stream.feed(b"hel", 1.0, logs.clock)
    logs.stream.feed(b"lo\nwor", 1.01, logs.clock)
    logs.stream.feed(b"ld\n", 1.02, logs.clock)
    assert [line[TIMESTAMP_PREFIX_LEN:] for line in logs.lines()] == [b"hello\n", b"world\n"]


def test_an_endless_line_is_cut_at_max_line(logs: Logs) -> None:
    chunk = b"x" * (_supervisor.READ_SIZE)
    for _ in range(5):
        logs.stream.feed(chunk, 1.0, logs.clock)
    logs.stream.feed(b"tail\n", 1.0, logs.clock)
    for which, skip in (("stdout", TIMESTAMP_PREFIX_LEN), ("combined", TIMESTAMP_PREFIX_LEN + 9)):
        bodies = [line[skip:-1] for line in logs.lines(which)]
        assert all(len(body) <= MAX_LINE for body in bodies)
        assert b"".join(bodies) == b"x" * (5 * len(chunk)) + b"tail"
        assert len(bodies) >= 5


def test_heavy_output_keeps_its_order_in_combined(logs: Logs) -> None:
    # Large chunks go through the combined writer's thread, small ones inline.
    expected = []
    for i in range(200):
        size = 40_000 if i % 3 else 10
        chunk = (b"%05d" % i) * (size // 5) + b"\n"
        expected.append(chunk)
        logs.stream.feed(chunk, 1.0, logs.clock)
    bodies = [line[TIMESTAMP_PREFIX_LEN + 9 :] for line in logs.lines("combined")]
    assert bodies == expected


def test_a_partial_line_keeps_its_first_arrival_time(logs: Logs) -> None:
    logs.stream.feed(b"a", 10.0, logs.clock)
    logs.stream.feed(b"b", 10.05, logs.clock)
    assert logs.stream.pending_since == 10.0
    logs.stream.feed(b"\nc", 10.06, logs.clock)
    assert logs.stream.pending == b"c"
    assert logs.stream.pending_since == 10.06


@pytest.mark.parametrize("seed", range(6))
def test_any_mix_of_lines_and_read_sizes_is_logged_exactly(logs: Logs, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(60):
        kind = rng.random()
        size = rng.randrange(0, 200) if kind < 0.7 else rng.randrange(MAX_LINE - 2, 3 * MAX_LINE + 5)
        lines.append(bytes([rng.randrange(32, 127)]) * size)
    stream = b"".join(line + b"\n" for line in lines)
    pos = 0
    while pos < len(stream):
        size = rng.choice([1, 7, 100, 4096, 65536, 65537, 1 << 20])
        logs.stream.feed(stream[pos : pos + size], 1.0, logs.clock)
        pos += size
    expected = [line[i : i + MAX_LINE] for line in lines for i in range(0, max(len(line), 1), MAX_LINE)]
    for which, skip in (("stdout", TIMESTAMP_PREFIX_LEN), ("combined", TIMESTAMP_PREFIX_LEN + 9)):
        assert [line[skip:-1] for line in logs.lines(which)] == expected


@pytest.mark.parametrize("length", [MAX_LINE - 1, MAX_LINE, MAX_LINE + 1])
@pytest.mark.parametrize("begun", [1, MAX_LINE // 2, MAX_LINE])
def test_a_line_begun_in_an_earlier_read_is_cut_only_past_max_line(logs: Logs, length: int, begun: int) -> None:
    # The line's first `begun` bytes wait as a partial line; the rest comes in a large
    # read with short lines after it, which is written without joining the two.
    line = bytes(i % 26 + 97 for i in range(length))
    begun = min(begun, length)
    after = b"".join(b"%06d\n" % i for i in range(20_000)) + b"unfinished"
    logs.stream.feed(line[:begun], 1.0, logs.clock)
    logs.stream.feed(line[begun:] + b"\n" + after, 1.0, logs.clock)
    assert logs.stream.pending == b"unfinished"
    expected = [line[i : i + MAX_LINE] for i in range(0, length, MAX_LINE)] + after.split(b"\n")[:-1]
    for which, skip in (("stdout", TIMESTAMP_PREFIX_LEN), ("combined", TIMESTAMP_PREFIX_LEN + 9)):
        assert [line[skip:-1] for line in logs.lines(which)] == expected

"""combined.log as numbered entries (engine/logs/entries.py), checked against a naive reading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sandbox_agent.engine.logs import entries
from sandbox_agent.engine.logs.feed import Segment


def write_log(path: Path, count: int, seed: int = 1) -> list[entries.Entry]:
    """A combined.log of ``count`` lines of random lengths (some past a 64 KiB block)."""
    rng = random.Random(seed)
    expected = []
    with open(path, "wb") as f:
        for n in range(1, count + 1):
            stream = rng.choice(["stdout", "stderr"])
            size = rng.choice([0, 1, 10, 200, 70_000]) if n % 50 == 0 else rng.randrange(0, 120)
            data = bytes(rng.randrange(32, 127) for _ in range(min(size, 300))) * max(1, size // 300) + b"\n"
            ms = 1_795_898_325_000 + n * 7
            stamp = f"[2026-11-28T{(ms // 3_600_000) % 24:02d}:{(ms // 60_000) % 60:02d}:{(ms // 1000) % 60:02d}."
            f.write(f"{stamp}{ms % 1000:03d}Z] [{stream}] ".encode() + data)
            expected.append(entries.Entry(n, stream, 0, data))
    return expected


def naive(expected: list[entries.Entry], stream: str, since: int, tail: int | None) -> list[tuple[int, bytes]]:
    kept = [(e.sequence, e.data) for e in expected if e.sequence > since and stream in ("combined", e.stream)]
    if tail is None:
        return kept
    return kept[-tail:] if tail else []


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[entries.Entry]]:
    path = tmp_path_factory.mktemp("entries") / "combined.log"
    return path, write_log(path, 3000)


def test_reads_match_a_naive_reading(log: tuple[Path, list[entries.Entry]]) -> None:
    path, expected = log
    index = entries.LineIndex()
    rng = random.Random(2)
    for _ in range(200):
        stream = rng.choice(["combined", "stdout", "stderr"])
        since = rng.choice([0, rng.randrange(0, 3100)])
        tail = rng.choice([None, 0, 1, rng.randrange(0, 4000)])
        got = entries.read(str(path), index, stream=stream, since=since, tail=tail, max_bytes=1 << 40)
        assert [(e.sequence, e.data) for e in got] == naive(expected, stream, since, tail), (stream, since, tail)
        assert all(e.stream == x.stream for e in got for x in [expected[e.sequence - 1]])


def test_timestamps_are_parsed(log: tuple[Path, list[entries.Entry]]) -> None:
    path, _ = log
    first = entries.read(str(path), entries.LineIndex(), stream="combined", since=0, tail=None, max_bytes=1 << 40)[0]
    assert first.timestamp_ms % 86_400_000 == (1_795_898_325_000 + 7) % 86_400_000


def test_the_byte_budget(log: tuple[Path, list[entries.Entry]]) -> None:
    path, expected = log
    budget = 5000
    forward = entries.read(str(path), entries.LineIndex(), stream="combined", since=0, tail=None, max_bytes=budget)
    backward = entries.read(str(path), entries.LineIndex(), stream="combined", since=0, tail=3000, max_bytes=budget)
    for got in (forward, backward):
        assert 0 < sum(len(e.data) for e in got) <= budget
        sequences = [e.sequence for e in got]
        assert sequences == sorted(sequences)
    assert forward[0].sequence == 1  # the oldest first, paging on with since
    # A tail: the newest that fit (line 3000 alone is larger than the budget: skipped).
    assert backward[-1].sequence == max(e.sequence for e in expected if len(e.data) <= budget)


def test_locate_is_where_a_replay_starts(log: tuple[Path, list[entries.Entry]]) -> None:
    path, expected = log
    raw = path.read_bytes()
    index = entries.LineIndex()
    for stream, since, tail in [
        ("combined", 0, None),
        ("combined", 1234, None),
        ("stderr", 0, 5),
        ("stdout", 2990, 50),
    ]:
        offset, lines = entries.locate(str(path), index, stream=stream, since=since, tail=tail)
        assert raw[:offset].count(b"\n") == lines
        replay = [e for e in entries.parse(raw[offset:], lines + 1) if stream in ("combined", e.stream)]
        assert [(e.sequence, e.data) for e in replay] == naive(expected, stream, since, tail)


def test_a_batch_parses_its_segment_once() -> None:
    segment = Segment(0, b"[2026-11-28T20:00:00.000Z] [stdout] a\n[2026-11-28T20:00:00.001Z] [stderr] b\n")
    batch = entries.Batch(segment, 41)
    assert [(e.sequence, e.stream, e.data) for e in batch.entries] == [(41, "stdout", b"a\n"), (42, "stderr", b"b\n")]
    assert batch.entries is entries.Batch(segment, 41).entries

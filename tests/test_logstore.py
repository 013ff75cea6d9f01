"""Reading logs: tails from the end, complete lines only, stripping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox_agent.engine.logs import store as _logstore


def write(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "log"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


@pytest.fixture
def many_lines(tmp_path: Path) -> tuple[int, list[bytes]]:
    # Lines of varied length, some longer than the read block, so tails cross blocks.
    lines = [b"[2026-01-30T12:32:45.123Z] " + str(i).encode() * (i % 7000) + b"\n" for i in range(300)]
    fd = write(tmp_path, b"".join(lines))
    yield fd, lines
    os.close(fd)


@pytest.mark.parametrize("n", [0, 1, 2, 17, 299, 300, 301, 10_000])
def test_tail_returns_the_last_n_lines(many_lines: tuple[int, list[bytes]], n: int) -> None:
    fd, lines = many_lines
    end = os.fstat(fd).st_size
    view = _logstore.LogView.from_fd(fd)
    start = _logstore.tail_start(view, end, n)
    assert _logstore.read_range(view, start, end) == b"".join(lines[len(lines) - min(n, len(lines)) :])


def test_tail_reads_only_from_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 64 MiB file: a tail of 3 lines must read one block, not the whole file.
    path = tmp_path / "big.log"
    line = b"y" * 99 + b"\n"
    path.write_bytes(line * (64 * 1024 * 1024 // len(line)))
    fd = os.open(path, os.O_RDONLY)
    reads = []
    real_pread = os.pread

    def counting_pread(fd_: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd_, n, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    try:
        end = os.fstat(fd).st_size
        start = _logstore.tail_start(_logstore.LogView.from_fd(fd), end, 3)
    finally:
        os.close(fd)
    assert end - start == 300
    assert sum(reads) <= 64 * 1024


def test_complete_end_ignores_a_line_still_being_written(tmp_path: Path) -> None:
    fd = write(tmp_path, b"a\nb\nhalf a li")
    try:
        assert _logstore.complete_end(_logstore.LogView.from_fd(fd), os.fstat(fd).st_size) == 4
    finally:
        os.close(fd)


def test_strip_removes_only_the_leading_timestamp() -> None:
    data = (
        b"[2026-01-30T12:32:45.123Z] [stdout] hello [2026-01-30T12:32:45.123Z] kept\n"
        b"[2026-01-30T12:32:46.000Z] [stderr] oops\n"
    )
    assert _logstore.strip_timestamps(data) == b"[stdout] hello [2026-01-30T12:32:45.123Z] kept\n[stderr] oops\n"


def test_decode_replaces_invalid_utf8() -> None:
    assert _logstore.decode(b"caf\xc3\xa9 \xff") == "caf\u00e9 \ufffd"

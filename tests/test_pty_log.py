"""The terminal's on-disk format and the engine's reads of it, without HTTP.

The control messages (``ondisk.encode_control``), pty.log with its index (the supervisor's
``PtyRecorder`` writing, the engine's ``read_entries`` reading), and the engine's
terminal API on a real tty process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MARKER, marked_pids
from sandbox_agent._exceptions import Conflict
from sandbox_agent.engine import ProcessManager, SpawnRequest
from sandbox_agent.engine.logs import pty
from sandbox_agent.supervisor import ondisk
from sandbox_agent.supervisor.terminal import PtyRecorder


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, value)
    yield value
    deadline = time.monotonic() + 10
    while marked_pids(value):
        assert time.monotonic() < deadline, f"left running: {marked_pids(value)}"
        time.sleep(0.02)


def test_control_messages_fit_one_atomic_fifo_write_and_reassemble() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes: three messages
    messages = ondisk.encode_control(ondisk.CONTROL_INPUT, payload)
    assert len(messages) == 3
    assert all(len(m) <= ondisk.CONTROL_MAX_MESSAGE for m in messages)
    stream = b"".join([*messages, ondisk.encode_resize(120, 40), *ondisk.encode_control(ondisk.CONTROL_EOF)])
    # Read in awkward pieces, as a FIFO may hand them over.
    decoded: list[tuple[int, bytes]] = []
    rest = b""
    for i in range(0, len(stream), 777):
        got, rest = ondisk.decode_control(rest + stream[i : i + 777])
        decoded += got
    assert rest == b""
    assert b"".join(data for kind, data in decoded if kind == ondisk.CONTROL_INPUT) == payload
    assert decoded[-2] == (ondisk.CONTROL_RESIZE, (120).to_bytes(2, "big") + (40).to_bytes(2, "big"))
    assert decoded[-1] == (ondisk.CONTROL_EOF, b"")
    with pytest.raises(ValueError, match="fit"):
        ondisk.encode_control(ondisk.CONTROL_RESIZE, bytes(5000))


def test_pty_entries_by_sequence(tmp_path: Path) -> None:
    recorder = PtyRecorder(str(tmp_path))
    for n, chunk in enumerate([b"a", b"bc", b"\x1b[1mdef", b"caf\xc3", b"\xa9"]):
        recorder.record(chunk, 1000.0 + n)
    entries = pty.read_entries(str(tmp_path), None, None, None)
    assert [(e.sequence, e.timestamp_ms, e.data) for e in entries] == [
        (1, 1000000, b"a"),
        (2, 1001000, b"bc"),
        (3, 1002000, b"\x1b[1mdef"),
        (4, 1003000, b"caf\xc3"),
        (5, 1004000, b"\xa9"),
    ]
    assert [e.sequence for e in pty.read_entries(str(tmp_path), 2, None, None)] == [3, 4, 5]
    assert [e.sequence for e in pty.read_entries(str(tmp_path), None, 2, None)] == [4, 5]
    assert [e.sequence for e in pty.read_entries(str(tmp_path), 3, 5, None)] == [4, 5]
    assert pty.read_entries(str(tmp_path), None, 0, None) == []
    assert pty.read_entries(str(tmp_path), 5, None, None) == []
    # max_bytes stops early, but always gives one entry.
    assert [e.sequence for e in pty.read_entries(str(tmp_path), None, None, 3)] == [1, 2]
    assert [e.sequence for e in pty.read_entries(str(tmp_path), 2, None, 1)] == [3]
    assert pty.read_tail(str(tmp_path), 6) == b"fcaf\xc3\xa9"
    assert pty.read_tail(str(tmp_path), 1000) == b"abc\x1b[1mdefcaf\xc3\xa9"
    # A record still being written is not an entry yet.
    with open(tmp_path / ondisk.PTY_INDEX, "ab") as f:
        f.write(b"\x01\x02\x03")
    assert len(pty.read_entries(str(tmp_path), None, None, None)) == 5


def test_the_engine_drives_a_terminal(tmp_path: Path, marker: str) -> None:
    code = "import sys; line = sys.stdin.readline(); print('got', line.strip(), flush=True); sys.exit(5)"

    async def main() -> str:
        manager = ProcessManager(tmp_path / "data")
        await manager.start()
        try:
            process = await manager.spawn(
                SpawnRequest(command=sys.executable, args=["-c", code], tty=True, terminal_size=(100, 30))
            )
            assert process.tty
            assert not process.interactive
            assert process.terminal_size == (100, 30)
            follow = manager.pty_follow(process.id, since=0)
            await manager.resize(process.id, 90, 20)
            assert manager.get(process.id).terminal_size == (90, 20)
            assert await manager.send_input(process.id, b"hello\n") == 6
            seen = b""
            exit_state = None
            async with asyncio.timeout(15):
                async for event in follow:
                    if isinstance(event, pty.PtyChunks):
                        seen += b"".join(e.data for e in event.entries)
                    elif isinstance(event, pty.PtyExit):
                        exit_state = event.state
                        break
            assert b"got hello\r\n" in seen
            assert exit_state is not None
            assert exit_state["exitCode"] == 5
            assert exit_state["terminalSize"] == [90, 20]
            entries = await manager.pty_entries(process.id)
            assert b"".join(e.data for e in entries) == await manager.pty_replay(process.id, 1 << 20)
            assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
            with pytest.raises(Conflict, match="not running"):
                await manager.send_input(process.id, b"x")
            with pytest.raises(Conflict, match="not running"):
                await manager.resize(process.id, 80, 24)

            plain = await manager.spawn(SpawnRequest(command="true"))
            await manager.wait(plain.id)
            assert await manager.pty_entries(plain.id) == []
            return plain.dir
        finally:
            await manager.close()

    plain_dir = asyncio.run(main())
    assert not os.path.exists(os.path.join(plain_dir, ondisk.CONTROL_FIFO))
    assert not os.path.exists(os.path.join(plain_dir, ondisk.PTY_INDEX))

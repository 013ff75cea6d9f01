"""A tty process's raw output capped: pty.log and pty.idx rotate together.

The writer prints fixed-size numbered tokens (``n=0000123;``, no newline, so the terminal
passes them as they are), so the whole output is known and what is kept must be exactly
its newest bytes. The first tests drive the supervisor's ``PtyRecorder`` directly (tiny
chunks, and a crash at every step of a rotation); the others a real server capped at
256 KiB.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from conftest import Server, py, sse_events, start, wait_exited, wait_for
from sandbox_agent.engine.logs import pty
from sandbox_agent.supervisor import ondisk
from sandbox_agent.supervisor.terminal import PtyRecorder

CAP = 256 * 1024
TOKEN = 10


def output(tokens: int) -> bytes:
    """The first ``tokens`` tokens of the writer's output."""
    return b"".join(b"n=%07d;" % i for i in range(tokens))


class States:
    """A state record for a recorder with no supervisor: rotations go into it."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / ondisk.STATE_FILE)
        self.state: dict[str, Any] = {"id": "p", "command": "x", "args": [], "status": "running", "startedAt": 0.0}
        ondisk.write_json_atomic(self.path, self.state)

    def record(self, name: str, info: dict[str, Any]) -> bool:
        self.state.setdefault("logs", {})[name] = info
        ondisk.write_json_atomic(self.path, self.state)
        return True


def sizes(directory: Path, prefix: str = "pty.") -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir() if p.name.startswith(prefix)}


def check_kept(directory: Path, full: bytes, recorded: int, chunk: int) -> list[pty.PtyEntry]:
    """The entries are the newest chunks, contiguous, and their bytes the newest output."""
    entries = pty.read_entries(str(directory), None, None, None)
    sequences = [e.sequence for e in entries]
    assert sequences == list(range(recorded - len(entries) + 1, recorded + 1))
    start = (sequences[0] - 1) * chunk
    assert b"".join(e.data for e in entries) == full[start : recorded * chunk]
    assert pty.read_tail(str(directory), 5000) == full[max(0, recorded * chunk - 5000) : recorded * chunk]
    return entries


def test_tiny_chunks_rotate_the_index_with_the_log(tmp_path: Path) -> None:
    states = States(tmp_path)
    recorder = PtyRecorder(str(tmp_path), CAP, states.record)
    chunks = 40000  # 640 KB of index for 400 KB of output: the index fills first
    full = output(chunks)
    try:
        for i in range(chunks):
            recorder.record(full[i * TOKEN : (i + 1) * TOKEN], 1.0)
    finally:
        os.close(recorder.log_fd)
        os.close(recorder.idx_fd)
    on_disk = sizes(tmp_path)
    assert set(on_disk) == {"pty.log", "pty.log.1", "pty.idx", "pty.idx.1"}
    assert on_disk["pty.idx"] + on_disk["pty.idx.1"] <= CAP
    assert on_disk["pty.log"] + on_disk["pty.log.1"] <= CAP
    entries = check_kept(tmp_path, full, chunks, TOKEN)
    # What is dropped from one file is dropped from the other: every kept byte is an entry.
    dropped = states.state["logs"]["pty.log"]["prev"]["base"]
    assert dropped == (entries[0].sequence - 1) * TOKEN == len(full) - on_disk["pty.log"] - on_disk["pty.log.1"]
    # Paging from a dropped sequence starts at the oldest kept; from a kept one, after it.
    assert pty.read_entries(str(tmp_path), 3, None, 100)[0].sequence == entries[0].sequence
    assert [e.sequence for e in pty.read_entries(str(tmp_path), chunks - 2, None, None)] == [chunks - 1, chunks]


class Crash(Exception):
    """A SIGKILL of the supervisor, here: nothing after it happens."""


def test_a_crash_at_any_step_of_a_rotation_leaves_a_readable_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = 3000  # 43 chunks fill half the cap
    full = output(150 * chunk // TOKEN)
    real_link, real_rename = os.link, os.rename
    # The steps: per file, link + rename + rename, then the state record's rename.
    for crash_at in range(1, 20):
        directory = tmp_path / str(crash_at)
        directory.mkdir()
        steps = 0

        def step() -> None:
            nonlocal steps
            steps += 1
            if steps == crash_at:  # noqa: B023 (each round's own, used within the round)
                raise Crash

        def link(*args: Any, **kwargs: Any) -> None:
            step()
            real_link(*args, **kwargs)

        def rename(*args: Any, **kwargs: Any) -> None:
            step()
            real_rename(*args, **kwargs)

        states = States(directory)
        recorder = PtyRecorder(str(directory), CAP, states.record)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(os, "rename", rename)
        recorded = 0
        try:
            for i in range(150):
                try:
                    recorder.record(full[i * chunk : (i + 1) * chunk], 1.0)
                except Crash:
                    break
                recorded += 1
            else:
                raise AssertionError(f"no step {crash_at} in 150 chunks")
        finally:
            monkeypatch.undo()
            os.close(recorder.log_fd)
            os.close(recorder.idx_fd)
        entries = check_kept(directory, full, recorded, chunk)
        assert len(entries) >= 40, f"crash at step {crash_at}: the newest chunks are kept"
        on_disk = sizes(directory)
        assert on_disk["pty.log"] + on_disk.get("pty.log.1", 0) <= CAP


# Writes `per` tokens for each file go<r> that appears (then done<r>), until stop appears.
WRITER = """
import os, sys, time
d, per = sys.argv[1], int(sys.argv[2])
i = r = 0
while True:
    while not os.path.exists(f"{d}/go{r}") and not os.path.exists(f"{d}/stop"):
        time.sleep(0.001)
    if os.path.exists(f"{d}/stop"):
        break
    data = memoryview(b"".join(b"n=%07d;" % (i + k) for k in range(per)))
    while data:
        data = data[os.write(1, data):]
    i += per
    open(f"{d}/done{r}", "w").close()
    r += 1
"""


@pytest.fixture
def capped(server_factory: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    yield server_factory(extra_args=["--max-log-bytes", "256K"])
    (tmp_path / "writer").mkdir(exist_ok=True)
    (tmp_path / "writer" / "stop").touch()


class Writer:
    def __init__(self, client: httpx.Client, tmp_path: Path, per: int) -> None:
        self.dir = tmp_path / "writer"
        self.dir.mkdir()
        body = py(WRITER)
        body["args"] += [str(self.dir), str(per)]
        body["tty"] = True
        self.id: str = start(client, body)["id"]
        self.per = per
        self.rounds = 0

    def round(self, client: httpx.Client | None = None) -> None:
        """One round written (and recorded, when a ``client`` can tell)."""
        r = self.rounds
        (self.dir / f"go{r}").touch()
        wait_for(lambda: (self.dir / f"done{r}").exists(), 30, f"round {r} of the writer")
        self.rounds += 1
        if client is not None:
            end = self.full[-TOKEN:]
            wait_for(lambda: kept(client, self.id)[1].endswith(end), 30, f"round {r} in pty.log")

    @property
    def full(self) -> bytes:
        return output(self.rounds * self.per)

    def stop(self, client: httpx.Client) -> dict[str, Any]:
        (self.dir / "stop").touch()
        return wait_exited(client, self.id)


def kept(client: httpx.Client, process_id: str) -> tuple[list[int], bytes]:
    """The sequences of the entries kept, and their bytes."""
    response = client.get(f"/v1/processes/{process_id}/logs", params={"stream": "pty"})
    entries = response.json()["entries"]
    return [e["sequence"] for e in entries], b"".join(base64.b64decode(e["data"]) for e in entries)


def check_newest(server: Server, client: httpx.Client, writer: Writer) -> int:
    """The kept entries are the newest output, contiguous, within the cap; returns their first."""
    sequences, data = kept(client, writer.id)
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    full = writer.full
    dropped = client.get(f"/v1/process/{writer.id}").json()["logBytesDropped"]["pty"]
    assert data == full[dropped:], "the newest output, from the first byte kept"
    on_disk = sizes(server.data_dir / "processes" / writer.id)
    assert on_disk["pty.log"] + on_disk["pty.log.1"] <= CAP
    assert on_disk["pty.idx"] + on_disk.get("pty.idx.1", 0) <= CAP
    assert dropped == len(full) - on_disk["pty.log"] - on_disk["pty.log.1"]
    return sequences[0]


def test_pty_output_stays_bounded_and_the_newest_is_kept(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 40000)  # 400 KB a round
        first = 0
        for _ in range(3):
            writer.round(client)
            now = check_newest(capped, client, writer)
            assert now >= first
            first = now
        assert first > 1
        # A page from a dropped sequence starts at the oldest kept; tail gives the newest.
        page = client.get(f"/v1/processes/{writer.id}/logs", params={"since": 1}).json()["entries"]
        assert page[0]["sequence"] == first
        last = client.get(f"/v1/processes/{writer.id}/logs", params={"tail": 2}).json()["entries"]
        assert base64.b64decode(last[-1]["data"]) == writer.full[-len(base64.b64decode(last[-1]["data"])) :]
        # A reconnecting terminal's replay is the newest output.
        url = f"ws://127.0.0.1:{capped.port}/v1/processes/{writer.id}/terminal/ws?replay=100000"
        with connect(url, additional_headers=capped.headers) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            replayed = b""
            deadline = time.monotonic() + 15
            while len(replayed) < 100000 and time.monotonic() < deadline:
                frame = ws.recv(timeout=15)
                assert isinstance(frame, bytes), frame
                replayed += frame
        assert replayed == writer.full[-100000:]
        final = writer.stop(client)
        assert final["logBytesDropped"]["pty"] == len(writer.full) - len(kept(client, writer.id)[1])


def test_a_follow_across_rotations_gets_every_chunk_once(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 6400)  # 64 KB a round: each round while followed
        sequences: list[int] = []
        data = b""
        with client.stream(
            "GET", f"/v1/processes/{writer.id}/logs", params={"follow": "true", "stream": "pty"}
        ) as response:
            events = sse_events(response)
            for _ in range(16):  # about four caps
                writer.round()
                while len(data) < len(writer.full):
                    event = next(events)
                    assert event.event == "log", event
                    entry = json.loads(event.data)
                    assert event.id == str(entry["sequence"])
                    sequences.append(entry["sequence"])
                    data += base64.b64decode(entry["data"])
            writer.stop(client)
            assert [event.event for event in events] == ["exit"]
        assert sequences == list(range(1, len(sequences) + 1))
        assert data == writer.full
        assert client.get(f"/v1/process/{writer.id}").json()["logBytesDropped"]["pty"] > 0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_pty_rotation_goes_on_through_a_restart_of_the_server(
    capped: Server, tmp_path: Path, how: signal.Signals
) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 30000)
        writer.round(client)
        first = check_newest(capped, client, writer)
    capped.restart(how)
    with capped.client() as client:
        writer.round(client)
        first = max(first, check_newest(capped, client, writer))
    capped.stop(how)
    writer.round()  # the supervisor rotates on while no server is up
    capped.start()
    with capped.client() as client:
        final = writer.stop(client)
        now = check_newest(capped, client, writer)
        assert now > first
        assert final["logBytesDropped"]["pty"] == len(writer.full) - len(kept(client, writer.id)[1])
        # A follow from an old Last-Event-ID resumes at the oldest entry kept, after a gap.
        with client.stream(
            "GET",
            f"/v1/processes/{writer.id}/logs",
            params={"follow": "true", "stream": "pty"},
            headers={"Last-Event-ID": "1"},
        ) as response:
            events = list(sse_events(response))
        assert (events[0].event, json.loads(events[0].data), events[0].id) == (
            "gap",
            {"from": 1, "to": now - 1},
            str(now - 1),
        )
        entries = [json.loads(e.data) for e in events[1:-1]]
        assert [e["sequence"] for e in entries] == list(range(now, now + len(entries)))
        assert b"".join(base64.b64decode(e["data"]) for e in entries) == writer.full[final["logBytesDropped"]["pty"] :]
        assert events[-1].event == "exit"

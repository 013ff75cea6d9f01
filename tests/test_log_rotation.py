"""Capped logs: bounded on disk, the newest kept, ids and sequences that never go back.

Each server here caps logs at the smallest cap (256 KiB: two files of 128 KiB). The
writer prints fixed-size numbered lines in rounds the test asks for (a file per round),
so what was written, and so what must have been dropped, is known exactly.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, py, sse_events, start, wait_exited, wait_for
from sandbox_agent.supervisor import rotation
from sandbox_agent.supervisor.rotation import Generations

CAP = 256 * 1024
BODY = 100  # "n=000123 " and padding: every line the same size
STDOUT_LINE = 27 + BODY + 1  # "[<ts>] " + body + newline
COMBINED_LINE = 27 + 9 + BODY + 1  # with "[stdout] "

# Writes `per` lines for each file go<r> that appears (then done<r>), until stop appears.
WRITER = """
import os, sys, time
d, per = sys.argv[1], int(sys.argv[2])
i = r = 0
while True:
    while not os.path.exists(f"{d}/go{r}") and not os.path.exists(f"{d}/stop"):
        time.sleep(0.001)
    if os.path.exists(f"{d}/stop"):
        break
    for _ in range(per):
        line = f"n={i:06d} "
        print(line + "x" * (100 - len(line)))
        i += 1
    sys.stdout.flush()
    open(f"{d}/done{r}", "w").close()
    r += 1
"""


@pytest.fixture
def capped(server_factory: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    yield server_factory(extra_args=["--max-log-bytes", "256K"])
    # A writer of a failed test must not outlive it (the leak check waits for it).
    (tmp_path / "writer").mkdir(exist_ok=True)
    (tmp_path / "writer" / "stop").touch()


class Writer:
    def __init__(self, client: httpx.Client, tmp_path: Path, per: int) -> None:
        self.dir = tmp_path / "writer"
        self.dir.mkdir()
        body = py(WRITER)
        body["args"] += [str(self.dir), str(per)]
        self.process = start(client, body)
        self.id: str = self.process["id"]
        self.per = per
        self.rounds = 0

    def round(self, client: httpx.Client | None = None) -> None:
        """One round written (and logged, when a ``client`` can tell)."""
        r = self.rounds
        (self.dir / f"go{r}").touch()
        wait_for(lambda: (self.dir / f"done{r}").exists(), 30, f"round {r} of the writer")
        self.rounds += 1
        if client is not None:
            wait_for(lambda: self.logged(client) == self.written, 30, f"round {r} in the log")

    def logged(self, client: httpx.Client) -> int:
        tail = client.get(f"/v1/process/{self.id}/logs", params={"stream": "stdout", "tail": 1}).json()
        return numbers(tail["content"].splitlines())[-1] + 1 if tail["lines"] else 0

    @property
    def written(self) -> int:
        return self.rounds * self.per

    def stop(self, client: httpx.Client) -> dict[str, Any]:
        (self.dir / "stop").touch()
        return wait_exited(client, self.id)


def numbers(lines: list[str]) -> list[int]:
    return [int(line.split("n=", 1)[1][:6]) for line in lines]


def on_disk(server: Server, process_id: str) -> dict[str, int]:
    directory = server.data_dir / "processes" / process_id
    return {path.name: path.stat().st_size for path in directory.iterdir() if ".log" in path.name}


def wait_rotated(client: httpx.Client, process_id: str, stream: str = "combined") -> dict[str, Any]:
    def dropped() -> dict[str, Any] | None:
        process: dict[str, Any] = client.get(f"/v1/process/{process_id}").json()
        return process if process.get("logBytesDropped", {}).get(stream) else None

    result: dict[str, Any] = wait_for(dropped, 15, f"bytes dropped from the {stream} log of {process_id}")
    return result


def test_logs_stay_bounded_and_the_newest_lines_are_kept(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 4000)
        for _ in range(3):  # 1.5 MB of stdout: about six caps
            writer.round()
        final = writer.stop(client)
        sizes = on_disk(capped, writer.id)
        # Two generations at most per log, never more than the cap together.
        assert set(sizes) <= {
            f"{name}{suffix}" for name in ("stdout.log", "stderr.log", "combined.log") for suffix in ("", ".1")
        }
        for name in ("stdout.log", "combined.log"):
            assert sizes[name + ".1"] <= CAP // 2
            assert sizes[name] + sizes[name + ".1"] <= CAP

        content = client.get(f"/v1/process/{writer.id}/logs", params={"stream": "stdout"}).json()["content"]
        kept = numbers(content.splitlines())
        assert kept == list(range(kept[0], writer.written)), "the newest lines, contiguous and in order"
        assert kept[0] > 0
        assert len(content.encode()) > CAP // 2  # both generations are read
        tail = client.get(f"/v1/process/{writer.id}/logs", params={"stream": "stdout", "tail": 3}).json()
        assert numbers(tail["content"].splitlines()) == list(range(writer.written - 3, writer.written))

        # The process object says how much went, in both dialects.
        dropped = final["logBytesDropped"]
        assert dropped["stdout"] == kept[0] * STDOUT_LINE
        assert dropped["stderr"] == 0
        combined = client.get(f"/v1/process/{writer.id}/logs").json()["content"].splitlines()
        assert dropped["combined"] == numbers(combined)[0] * COMBINED_LINE
        assert client.get(f"/v1/processes/{writer.id}").json()["logBytesDropped"] == dropped


def test_entry_sequences_go_on_across_rotations(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 4000)
        before = None
        for _ in range(3):
            writer.round(client)
            entries = client.get(f"/v1/processes/{writer.id}/logs", params={"since": 0}).json()["entries"]
            sequences = [entry["sequence"] for entry in entries]
            assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
            # A sequence is the line's number in the log, dropped lines counted.
            assert [int(base64.b64decode(e["data"])[2:8]) + 1 for e in entries] == sequences
            assert sequences[-1] == writer.written
            if before is not None:
                assert sequences[0] >= before
            before = sequences[0]
        assert before > 1
        # Paging with `since` older than what is kept starts at the oldest entry kept.
        page = client.get(f"/v1/processes/{writer.id}/logs", params={"since": 5}).json()["entries"]
        assert page[0]["sequence"] == before
        last = client.get(f"/v1/processes/{writer.id}/logs", params={"tail": 2}).json()["entries"]
        assert [e["sequence"] for e in last] == [writer.written - 1, writer.written]
        writer.stop(client)


def test_a_follow_during_rotations_gets_every_line_once(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 1000)
        seen: list[int] = []
        with client.stream(
            "GET", f"/v1/process/{writer.id}/logs", params={"follow": "true", "stream": "stdout"}
        ) as response:
            events = sse_events(response)
            assert json.loads(next(events).data)["lines"] == 0
            last_id = 0
            for _ in range(12):  # 12,000 lines: about six caps, each round while followed
                writer.round()
                while len(seen) < writer.written:
                    event = next(events)
                    assert int(event.id or 0) > last_id, "ids only grow"
                    last_id = int(event.id or 0)
                    if event.event == "gap":  # allowed only if said, and only for lines not sent
                        gap = json.loads(event.data)
                        seen.extend([-1] * ((gap["to"] - gap["from"]) // STDOUT_LINE))
                        continue
                    seen.extend(numbers([event.data]))
            writer.stop(client)
            rest = [event for event in events]
        assert rest[-1].event == "exit"
        assert seen == list(range(writer.written)), "every line once, in order"
        assert client.get(f"/v1/process/{writer.id}").json()["logBytesDropped"]["stdout"] > 0


def test_an_entries_follow_during_rotations_gets_every_entry_once(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 1000)
        sequences: list[int] = []
        with client.stream("GET", f"/v1/processes/{writer.id}/logs", params={"follow": "true"}) as response:
            events = sse_events(response)
            for _ in range(12):
                writer.round()
                while len(sequences) < writer.written:
                    event = next(events)
                    assert event.event == "log", event
                    entry = json.loads(event.data)
                    assert int(base64.b64decode(entry["data"])[2:8]) + 1 == entry["sequence"]
                    sequences.append(entry["sequence"])
            writer.stop(client)
            assert [event.event for event in events] == ["exit"]
        assert sequences == list(range(1, writer.written + 1))
        wait_rotated(client, writer.id)


def test_an_old_last_event_id_resumes_at_the_oldest_line_kept_and_says_so(capped: Server, tmp_path: Path) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 6000)
        writer.round()
        writer.stop(client)
        kept = numbers(
            client.get(f"/v1/process/{writer.id}/logs", params={"stream": "stdout"}).json()["content"].splitlines()
        )
        # /v1/process: the id of the first line ever written.
        with client.stream(
            "GET",
            f"/v1/process/{writer.id}/logs",
            params={"follow": "true", "stream": "stdout"},
            headers={"Last-Event-ID": str(STDOUT_LINE)},
        ) as response:
            events = list(sse_events(response))
        gap = events[0]
        assert gap.event == "gap"
        assert json.loads(gap.data) == {"from": STDOUT_LINE, "to": kept[0] * STDOUT_LINE}
        assert gap.id == str(kept[0] * STDOUT_LINE)
        assert numbers([e.data for e in events[1:-1]]) == kept
        assert events[-1].event == "exit"
        # /v1/processes: the first sequence.
        with client.stream(
            "GET", f"/v1/processes/{writer.id}/logs", params={"follow": "true"}, headers={"Last-Event-ID": "1"}
        ) as response:
            events = list(sse_events(response))
        first = json.loads(events[1].data)["sequence"]
        assert (events[0].event, json.loads(events[0].data), events[0].id) == (
            "gap",
            {"from": 1, "to": first - 1},
            str(first - 1),
        )
        assert [json.loads(e.data)["sequence"] for e in events[1:-1]] == list(range(first, writer.written + 1))
        assert events[-1].event == "exit"
        # A resume from an id still kept gets no gap.
        resume = (kept[-2] + 1) * STDOUT_LINE
        with client.stream(
            "GET",
            f"/v1/process/{writer.id}/logs",
            params={"follow": "true", "stream": "stdout"},
            headers={"Last-Event-ID": str(resume)},
        ) as response:
            events = list(sse_events(response))
        assert [e.event for e in events] == ["message", "exit"]
        assert numbers([events[0].data]) == [kept[-1]]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_rotation_goes_on_through_a_restart_of_the_server(capped: Server, tmp_path: Path, how: signal.Signals) -> None:
    with capped.client() as client:
        writer = Writer(client, tmp_path, 3000)
        writer.round(client)
        writer.round(client)
        dropped = wait_rotated(client, writer.id, "stdout")["logBytesDropped"]["stdout"]
        last = client.get(f"/v1/processes/{writer.id}/logs", params={"tail": 1}).json()["entries"][-1]["sequence"]
    capped.restart(how)
    with capped.client() as client:
        for _ in range(2):
            writer.round(client)
    capped.stop(how)
    writer.round()  # the supervisor rotates on while no server is up
    capped.start()
    with capped.client() as client:
        final = writer.stop(client)
        assert final["logBytesDropped"]["stdout"] > dropped
        kept = numbers(
            client.get(f"/v1/process/{writer.id}/logs", params={"stream": "stdout"}).json()["content"].splitlines()
        )
        assert kept == list(range(kept[0], writer.written))
        assert final["logBytesDropped"]["stdout"] == kept[0] * STDOUT_LINE
        entries = client.get(f"/v1/processes/{writer.id}/logs", params={"since": last}).json()["entries"]
        sequences = [entry["sequence"] for entry in entries]
        assert sequences[0] > last
        assert sequences == list(range(sequences[0], writer.written + 1))
        sizes = on_disk(capped, writer.id)
        assert sizes["stdout.log"] + sizes["stdout.log.1"] <= CAP


def test_a_start_request_sets_its_own_cap(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        # The default cap (64 MiB) would keep everything; this process asks for the smallest.
        body = py("for i in range(6000): print(f'n={i:06d} ' + 'x' * 91)")
        body["maxLogBytes"] = CAP
        process = start(client, body)
        final = wait_exited(client, process["id"])
        assert final["logBytesDropped"]["stdout"] > 0
        assert sum(on_disk(server, process["id"]).values()) <= 3 * CAP
        plain = start(client, py("for i in range(6000): print(f'n={i:06d} ' + 'x' * 91)"))
        assert "logBytesDropped" not in wait_exited(client, plain["id"])
        for cap in (1, CAP - 1, -1):
            body["maxLogBytes"] = cap
            response = client.post("/v1/process", json=body)
            assert response.status_code in (400, 422), response.text
            assert response.headers["content-type"] == "application/problem+json"
        response = client.post("/v1/processes", json={**body, "maxLogBytes": 12})
        assert response.status_code == 400
        assert "maxLogBytes" in response.json()["detail"]


@pytest.mark.parametrize("value", ["12", "1x", "-5", "100K"])
def test_a_cap_the_server_cannot_keep_is_refused_at_start(tmp_path: Path, value: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sandbox_agent", "server", "--data-dir", str(tmp_path), "--max-log-bytes", value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--max-log-bytes" in result.stderr


# -- the rotation's steps, on files -----------------------------------------------------


def _rotate_twice(tmp_path: Path) -> tuple[Path, list[int]]:
    """A log rotated twice: what each generation held is its name; the inodes of the three
    files it had, oldest first."""
    path = tmp_path / "stdout.log"
    generations = Generations(str(path), lambda name, info: True, count_lines=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    inodes = []
    for content in (b"first\n", b"second\n"):
        os.write(fd, content)
        inodes.append(os.fstat(fd).st_ino)
        new = generations.rotate(fd, len(content))
        assert new != -1
        os.close(fd)
        fd = new
    os.write(fd, b"third\n")
    inodes.append(os.fstat(fd).st_ino)
    os.close(fd)
    return path, inodes


def test_a_rotation_exchanges_names_and_leaves_two_generations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The previous generation takes the place of the one before it by an exchange of
    # names (no rename over a file: ext4 would write the whole generation out at once).
    libc = ctypes.CDLL(None, use_errno=True)
    calls: list[tuple[Any, ...]] = []

    def recording(*args: Any) -> int:
        result: int = libc.renameat2(*args)
        calls.append((*args, result))
        return result

    monkeypatch.setattr(rotation, "_renameat2", recording)
    path, inodes = _rotate_twice(tmp_path)
    # The first rotation had no "stdout.log.1" to exchange with; the second exchanged.
    assert [call[-2:] for call in calls] == [(2, -1), (2, 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdout.log", "stdout.log.1"]
    assert path.read_bytes() == b"third\n"
    assert os.stat(path).st_ino == inodes[2]
    rotated = tmp_path / "stdout.log.1"
    assert rotated.read_bytes() == b"second\n"
    assert os.stat(rotated).st_ino == inodes[1]


def test_without_the_exchange_a_rotation_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A filesystem or kernel without RENAME_EXCHANGE: the same files, by plain renames.
    monkeypatch.setattr(rotation, "_renameat2", lambda *args: -1)
    path, inodes = _rotate_twice(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdout.log", "stdout.log.1"]
    assert path.read_bytes() == b"third\n"
    assert os.stat(path).st_ino == inodes[2]
    assert (tmp_path / "stdout.log.1").read_bytes() == b"second\n"


def test_the_launcher_hands_supervisors_the_exchange(tmp_path: Path) -> None:
    # prepare() runs in the launcher before it forks: every supervisor rotates by exchange.
    code = (
        "from sandbox_agent.supervisor import rotation, supervisor\n"
        "assert rotation._renameat2 is None\n"
        "supervisor.prepare()\n"
        "print(rotation._renameat2 is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"

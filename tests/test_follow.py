"""Following logs over SSE: snapshot, live lines, resume by Last-Event-ID, exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import py, sse_events, start, wait_exited, wait_for

# Prints its argument's lines once a go-file appears, then waits for a stop-file.
STEPPED = """
import os, sys, time
go, stop = sys.argv[1], sys.argv[2]
print('before', flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
for i in range(3):
    print(f'live {i}', flush=True)
print('to stderr', file=sys.stderr, flush=True)
while not os.path.exists(stop):
    time.sleep(0.005)
raise SystemExit(5)
"""


def follow(client: httpx.Client, process_id: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    params.setdefault("follow", "true")
    return client.stream("GET", f"/v1/process/{process_id}/logs", params=params, headers=headers or {})


def start_stepped(client: httpx.Client, tmp_path: Path) -> tuple[dict[str, Any], Path, Path]:
    """Start STEPPED and wait for its first line; touch go, then stop, to move it on."""
    go, stop = tmp_path / "go", tmp_path / "stop"
    body = py(STEPPED)
    body["args"] += [str(go), str(stop)]
    process = start(client, body)
    wait_for(lambda: "before" in client.get(f"/v1/process/{process['id']}/logs").text, 10, "first line")
    return process, go, stop


def test_snapshot_then_live_lines_then_exit(client: httpx.Client, tmp_path: Path) -> None:
    process, go, stop = start_stepped(client, tmp_path)
    with follow(client, process["id"], strip_timestamps="true") as response:
        assert response.headers["cache-control"] == "no-cache"
        events = sse_events(response)
        snapshot = next(events)
        assert json.loads(snapshot.data) == {"content": "[stdout] before\n", "lines": 1}
        assert snapshot.id is not None
        go.touch()
        live = [next(events) for _ in range(4)]
        assert sorted(e.data for e in live) == [
            "[stderr] to stderr",
            "[stdout] live 0",
            "[stdout] live 1",
            "[stdout] live 2",
        ]
        ids = [int(e.id) for e in [snapshot, *live]]
        assert ids == sorted(ids)
        assert len(set(ids)) == 5
        stop.touch()
        exit_event = next(events)
        assert exit_event.event == "exit"
        assert json.loads(exit_event.data) == {"status": "stopped", "exitCode": 5, "exitSignal": None}
        assert list(events) == []  # the stream ends


def test_tail_zero_gives_an_empty_snapshot_and_stream_selects(client: httpx.Client, tmp_path: Path) -> None:
    process, go, stop = start_stepped(client, tmp_path)
    with follow(client, process["id"], tail=0, stream="stdout") as response:
        events = sse_events(response)
        assert json.loads(next(events).data) == {"content": "", "lines": 0}
        go.touch()
        live = [next(events) for _ in range(3)]
        assert [e.data[27:] for e in live] == ["live 0", "live 1", "live 2"]
        assert all(e.data.startswith("[") and e.data[24:27] == "Z] " for e in live)
        stop.touch()
        assert next(events).event == "exit"


def test_following_an_exited_process_gives_snapshot_and_exit(client: httpx.Client) -> None:
    process = start(client, py("print('a'); print('b'); raise SystemExit(2)"))
    wait_exited(client, process["id"])
    with follow(client, process["id"], tail=1, stripTimestamps="true") as response:
        events = list(sse_events(response))
    assert [e.event for e in events] == ["message", "exit"]
    assert json.loads(events[0].data) == {"content": "[stdout] b\n", "lines": 1}
    assert json.loads(events[1].data)["exitCode"] == 2


COUNTER = """
import sys, time
for i in range(int(sys.argv[1])):
    print(f'n={i}', flush=True)
    if i % 50 == 0:
        time.sleep(0.002)
"""


def test_nothing_lost_or_repeated_between_snapshot_and_live(client: httpx.Client) -> None:
    body = py(COUNTER)
    body["args"].append("6000")
    process = start(client, body)
    wait_for(lambda: "n=100\n" in client.get(f"/v1/process/{process['id']}/logs").json()["content"], 10, "some output")
    with follow(client, process["id"], stream="stdout", strip_timestamps="true") as response:
        events = sse_events(response)
        snapshot = json.loads(next(events).data)
        lines = snapshot["content"].splitlines()
        for event in events:
            if event.event == "exit":
                break
            lines.append(event.data)
    assert lines == [f"n={i}" for i in range(6000)]


def test_resume_with_last_event_id_continues_exactly(client: httpx.Client) -> None:
    body = py(COUNTER)
    body["args"].append("3000")
    process = start(client, body)
    seen: list[str] = []
    last_id = None
    with follow(client, process["id"], stream="stdout", strip_timestamps="true", tail=0) as response:
        events = sse_events(response)
        last_id = next(events).id
        for event in events:
            seen.append(event.data)
            last_id = event.id
            if len(seen) == 700:
                break
    resumed_first = True
    with follow(client, process["id"], {"Last-Event-ID": str(last_id)}, stream="stdout", strip_timestamps="true") as r:
        for event in sse_events(r):
            if resumed_first:
                assert not event.data.startswith("{"), "a resumed stream sends no snapshot"
                resumed_first = False
            if event.event == "exit":
                break
            seen.append(event.data)
    first = int(seen[0].removeprefix("n="))
    assert seen == [f"n={i}" for i in range(first, 3000)]
    wait_exited(client, process["id"])


def test_resume_after_exit_gets_only_the_exit(client: httpx.Client) -> None:
    process = start(client, py("print('only')"))
    wait_exited(client, process["id"])
    with follow(client, process["id"]) as response:
        events = list(sse_events(response))
    with follow(client, process["id"], {"Last-Event-ID": events[-1].id}) as response:
        again = list(sse_events(response))
    assert [e.event for e in again] == ["exit"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1", "999999999"])
def test_a_bad_last_event_id_is_400(client: httpx.Client, bad: str) -> None:
    process = start(client, py("print('hello world')"))
    wait_exited(client, process["id"])
    response = client.get(
        f"/v1/process/{process['id']}/logs", params={"follow": "true"}, headers={"Last-Event-ID": bad}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "Last-Event-ID" in response.json()["detail"]


def test_many_followers_each_get_every_line(client: httpx.Client) -> None:
    body = py(COUNTER)
    body["args"].append("2000")
    process = start(client, body)
    streams = [follow(client, process["id"], stream="stdout", strip_timestamps="true", tail=0) for _ in range(5)]
    responses = [s.__enter__() for s in streams]
    try:
        for response in responses:
            events = sse_events(response)
            next(events)
            got = []
            for event in events:
                if event.event == "exit":
                    break
                got.append(event.data)
            first = int(got[0].removeprefix("n=")) if got else 2000
            assert got == [f"n={i}" for i in range(first, 2000)]
    finally:
        for s in streams:
            s.__exit__(None, None, None)


def test_carriage_returns_do_not_break_events(client: httpx.Client) -> None:
    process = start(client, py("import sys; sys.stdout.write('10%\\r50%\\r100%\\r\\ndone\\r\\n')"))
    wait_exited(client, process["id"])
    with follow(client, process["id"], stream="stdout", strip_timestamps="true") as response:
        events = list(sse_events(response))
    snapshot = json.loads(events[0].data)
    assert snapshot["content"] == "10%\r50%\r100%\r\ndone\r\n"
    assert events[-1].event == "exit"

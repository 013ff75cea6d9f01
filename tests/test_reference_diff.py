"""Differential tests: the same requests to the original server (0.4.2) and to ours.

The original comes from npm (``tests/reference/package.json``, pinned, with its lock
file), installed by ``npm ci`` on first use; CI installs it up front (``.ci/run``). Each
test sends the same requests to both servers and compares status codes and JSON shapes
(key sets and value types) field by field, after normalising ids and times. Where we
differ on purpose, ``DIFFERENCES`` says so, with the reason, and the tests use it by name:
a difference found that is not there fails.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Reference, Server, wait_for

#: Where we answer differently from the original on purpose, and why.
DIFFERENCES = {
    "plain-text-errors": "the original answers framework errors (bad JSON, wrong types, bad query, wrong method) "
    "in text/plain or with an empty body; every error of ours is problem+json that says what to do",
    "problem-details": "the original adds a `details` object to 404/409/502 problems; we keep the four RFC 9457 "
    "fields, our `detail` says what happened and what to do",
    "detail-words": "our problem details are our own sentences (what was wrong, what to do), not the original's",
    "ids": "our ids are 26 lowercase characters ordered by creation, not proc_<n>",
    "cwd-shown": "we show the directory a process runs in even when the request gave none (the original omits it)",
    "exit-signal": "extension: exitSignal, the signal that ended a process",
    "exit-event": "extension: a follow ends with an `exit` event once the process exited and every entry was sent "
    "(the original's stays open)",
    "line-entries": "an entry is one line of output (durable, numbered across restarts); the original's is one read "
    "chunk held in memory",
    "no-eio-output": "when a tty process exits, the original's pty reader fails with EIO and sends "
    "`\\n[process stream error: I/O error (os error 5)]\\n` to WebSocket clients and the pty log as if it were "
    "output; ours ends the output at the exit, the terminal shows only what the process wrote",
    "validate-first": "a command that cannot be found, or a bad cwd, is a 400 before anything starts; the original "
    "tries to spawn and answers 502",
}


@pytest.fixture
def reference(reference_installed: Path, tmp_path: Path) -> Iterator[Reference]:
    home = tmp_path / "reference-home"
    home.mkdir()
    ref = Reference(home)
    yield ref
    ref.stop()


@pytest.fixture
def pair(reference: Reference, server: Server) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(reference client, our client)."""
    with httpx.Client(base_url=reference.url, timeout=30) as theirs, server.client() as ours:
        yield theirs, ours


# -- comparing ----------------------------------------------------------------------


def shape(value: Any) -> Any:
    """Key sets and value types, recursively; lists by the shapes of their items."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes = []
        for item in value:
            if shape(item) not in shapes:
                shapes.append(shape(item))
        return shapes
    return type(value).__name__


def assert_same_shape(theirs: Any, ours: Any, *, allowed_extra: dict[str, str] | None = None) -> None:
    """Same keys with the same value types, at every depth (list items pairwise);
    ``allowed_extra``: keys only ours may have, each with its reason in DIFFERENCES."""
    extra = allowed_extra or {}
    for reason in extra.values():
        assert reason in DIFFERENCES, reason
    if isinstance(theirs, dict) and isinstance(ours, dict):
        assert set(theirs) <= set(ours), f"keys the original has and we lack: {set(theirs) - set(ours)}"
        only_ours = set(ours) - set(theirs)
        assert only_ours <= set(extra), f"keys only we have, not allowed: {only_ours - set(extra)}"
        for key in theirs:
            assert_same_shape(theirs[key], ours[key], allowed_extra=extra)
    elif isinstance(theirs, list) and isinstance(ours, list) and theirs and isinstance(theirs[0], dict):
        assert len(theirs) == len(ours), (theirs, ours)
        for a, b in zip(theirs, ours, strict=True):
            assert_same_shape(a, b, allowed_extra=extra)
    else:
        assert shape(theirs) == shape(ours), (theirs, ours)


def assert_same_problem(theirs: httpx.Response, ours: httpx.Response) -> None:
    assert theirs.status_code == ours.status_code, (theirs.text, ours.text)
    assert ours.headers["content-type"] == "application/problem+json"
    if not theirs.headers.get("content-type", "").startswith("application/problem+json"):
        assert "plain-text-errors" in DIFFERENCES
        return
    a, b = theirs.json(), ours.json()
    assert (a["type"], a["title"], a["status"]) == (b["type"], b["title"], b["status"]), (a, b)
    assert set(b) == {"type", "title", "status", "detail"}
    assert set(a) - set(b) <= {"details"}, "problem-details"


def both(
    pair: tuple[httpx.Client, httpx.Client],
    method: str,
    path: Callable[[str], str] | str,
    ids: tuple[str, str] = ("", ""),
    **kwargs: Any,
) -> tuple[httpx.Response, httpx.Response]:
    theirs, ours = pair
    make = path if callable(path) else (lambda _id: path)
    return theirs.request(method, make(ids[0]), **kwargs), ours.request(method, make(ids[1]), **kwargs)


def create_both(pair: tuple[httpx.Client, httpx.Client], body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    a, b = both(pair, "POST", "/v1/processes", json=body)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    return a.json(), b.json()


def wait_exited_both(
    pair: tuple[httpx.Client, httpx.Client], ids: tuple[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    def exited(client: httpx.Client, process_id: str) -> dict[str, Any] | None:
        info: dict[str, Any] = client.get(f"/v1/processes/{process_id}").json()
        return info if info["status"] == "exited" else None

    return (
        wait_for(lambda: exited(pair[0], ids[0]), 10, "the reference's process to exit"),
        wait_for(lambda: exited(pair[1], ids[1]), 10, "our process to exit"),
    )


# -- the tests ----------------------------------------------------------------------------


def test_config(pair: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = both(pair, "GET", "/v1/processes/config")
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    assert list(a.json()) == list(b.json())
    clamped = dict(a.json(), defaultRunTimeoutMs=500_000)
    a, b = both(pair, "POST", "/v1/processes/config", json=clamped)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    for field in ("maxConcurrentProcesses", "maxRunTimeoutMs", "maxLogBytesPerProcess"):
        a, b = both(pair, "POST", "/v1/processes/config", json=dict(clamped, **{field: 0}))
        assert_same_problem(a, b)
    partial = dict(clamped)
    del partial["maxOutputBytes"]
    assert_same_problem(*both(pair, "POST", "/v1/processes/config", json=partial))  # 422
    assert_same_problem(*both(pair, "PUT", "/v1/processes/config"))  # 405, "plain-text-errors"


def test_process_info_running_exited_stopped(pair: tuple[httpx.Client, httpx.Client]) -> None:
    running = create_both(pair, {"command": "sleep", "args": ["30"]})
    assert_same_shape(*running, allowed_extra={"cwd": "cwd-shown"})
    assert running[0]["status"] == running[1]["status"] == "running"
    ids = (running[0]["id"], running[1]["id"])
    assert_same_shape(*[r.json() for r in both(pair, "GET", lambda i: f"/v1/processes/{i}", ids)],
                      allowed_extra={"cwd": "cwd-shown"})  # fmt: skip
    a, b = both(pair, "GET", "/v1/processes")
    assert_same_shape(a.json(), b.json(), allowed_extra={"cwd": "cwd-shown"})
    a, b = both(pair, "GET", "/v1/processes", params={"owner": "user"})
    assert len(a.json()["processes"]) == len(b.json()["processes"]) == 1
    a, b = both(pair, "GET", "/v1/processes", params={"owner": "system"})
    assert a.json() == b.json() == {"processes": []}
    stopped = both(pair, "POST", lambda i: f"/v1/processes/{i}/stop", ids)
    assert stopped[0].status_code == stopped[1].status_code == 200
    assert_same_shape(
        stopped[0].json(), stopped[1].json(), allowed_extra={"cwd": "cwd-shown", "exitSignal": "exit-signal"}
    )
    assert "pid" not in stopped[1].json()
    assert "exitCode" not in stopped[1].json()
    a, b = both(pair, "DELETE", lambda i: f"/v1/processes/{i}", ids)
    assert a.status_code == b.status_code == 204
    assert a.content == b.content == b""

    coded = create_both(pair, {"command": "sh", "args": ["-c", "exit 3"], "cwd": "/tmp"})
    assert_same_shape(*coded)  # a cwd given: both show it
    final = wait_exited_both(pair, (coded[0]["id"], coded[1]["id"]))
    assert_same_shape(*final)
    assert final[0]["exitCode"] == final[1]["exitCode"] == 3


def test_errors(pair: tuple[httpx.Client, httpx.Client]) -> None:
    assert_same_problem(*both(pair, "GET", "/v1/processes/proc_999"))
    assert_same_problem(*both(pair, "GET", "/v1/processes/proc_999/unknown"))  # an unknown route
    assert_same_problem(*both(pair, "POST", "/v1/processes/nope/stop"))
    assert_same_problem(*both(pair, "GET", "/v1/processes/nope/logs"))
    assert_same_problem(*both(pair, "POST", "/v1/processes", json={"command": "  "}))
    assert_same_problem(*both(pair, "POST", "/v1/processes", json={}))  # 422
    assert_same_problem(*both(pair, "POST", "/v1/processes", json={"command": "x", "args": [1]}))  # 422
    assert_same_problem(*both(pair, "GET", "/v1/processes", params={"owner": "bogus"}))  # 400
    running = create_both(pair, {"command": "sleep", "args": ["30"]})
    ids = (running[0]["id"], running[1]["id"])
    assert_same_problem(*both(pair, "DELETE", lambda i: f"/v1/processes/{i}", ids))  # 409
    for params in ({"tail": "-1"}, {"since": "abc"}, {"stream": "bogus"}, {"follow": "1"}):
        assert_same_problem(*both(pair, "GET", lambda i: f"/v1/processes/{i}/logs", ids, params=params))
    assert_same_problem(*both(pair, "GET", lambda i: f"/v1/processes/{i}/logs", ids, headers={"Last-Event-ID": "abc"}))
    killed = both(pair, "POST", lambda i: f"/v1/processes/{i}/kill", ids)
    assert killed[0].json()["status"] == killed[1].json()["status"] == "exited"
    # A command that is not there: the original tries and answers 502, we refuse first.
    a, b = both(pair, "POST", "/v1/processes", json={"command": "no-such-tool-xyz"})
    assert (a.status_code, b.status_code) == (502, 400), "validate-first"


def test_run(pair: tuple[httpx.Client, httpx.Client]) -> None:
    for body in (
        {"command": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]},
        {"command": "sh", "args": ["-c", "printf 0123456789abcdef; printf ERRERRERRERR >&2"], "maxOutputBytes": 5},
        {"command": "printf", "args": ["12345"], "maxOutputBytes": 5},
        {"command": "sh", "args": ["-c", "echo $TERM; cat"]},
        {"command": "sh", "args": ["-c", "kill -9 $$"]},
        {"command": "sleep", "args": ["5"], "timeoutMs": 300},
    ):
        a, b = both(pair, "POST", "/v1/processes/run", json=body)
        assert a.status_code == b.status_code == 200
        assert list(a.json()) == list(b.json())
        assert {**a.json(), "durationMs": 0} == {**b.json(), "durationMs": 0}, body
    assert_same_problem(*both(pair, "POST", "/v1/processes/run", json={"command": ""}))
    assert_same_problem(*both(pair, "POST", "/v1/processes/run", json={"command": "x", "timeoutMs": -1}))
    # Runs are not processes.
    a, b = both(pair, "GET", "/v1/processes")
    assert a.json() == b.json() == {"processes": []}


def decoded(response: httpx.Response, stream: str) -> str:
    return "".join(base64.b64decode(e["data"]).decode() for e in response.json()["entries"] if e["stream"] == stream)


def test_logs(pair: tuple[httpx.Client, httpx.Client]) -> None:
    made = create_both(pair, {"command": "sh", "args": ["-c", "echo out; echo err >&2; echo more"]})
    ids = (made[0]["id"], made[1]["id"])
    wait_exited_both(pair, ids)
    a, b = both(pair, "GET", lambda i: f"/v1/processes/{i}/logs", ids)
    assert a.status_code == b.status_code == 200
    assert list(a.json()) == list(b.json()) == ["processId", "stream", "entries"]
    assert a.json()["stream"] == b.json()["stream"] == "combined"
    for entry in b.json()["entries"]:  # as many as lines, not read chunks ("line-entries")
        assert list(entry) == list(a.json()["entries"][0])
        assert_same_shape(a.json()["entries"][0], entry)
    # The same bytes per stream; how they are cut into entries differs ("line-entries").
    for stream in ("stdout", "stderr"):
        assert decoded(a, stream) == decoded(b, stream)
    for params in ({"stream": "stdout"}, {"stream": "stderr"}, {"stream": "pty"}, {"tail": "0"}, {"since": "99"}):
        a, b = both(pair, "GET", lambda i: f"/v1/processes/{i}/logs", ids, params=params)
        assert a.status_code == b.status_code == 200
        assert a.json()["stream"] == b.json()["stream"]
        for stream in ("stdout", "stderr"):
            assert decoded(a, stream) == decoded(b, stream), params


def sse_read(client: httpx.Client, path: str, count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The first ``count`` events (event, id, data) of a follow."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    with client.stream("GET", path, params={"follow": "true"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event, ident, data = "message", "", ""
        for line in response.iter_lines():
            if line == "":
                if data:
                    found.append((event, ident, json.loads(data)))
                    if len(found) == count:
                        break
                event, ident, data = "message", "", ""
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data += line[6:]
    return found


def test_follow(pair: tuple[httpx.Client, httpx.Client]) -> None:
    made = create_both(pair, {"command": "sh", "args": ["-c", "echo one"]})
    ids = (made[0]["id"], made[1]["id"])
    wait_exited_both(pair, ids)
    theirs = sse_read(pair[0], f"/v1/processes/{ids[0]}/logs", 1)
    ours = sse_read(pair[1], f"/v1/processes/{ids[1]}/logs", 2)
    assert [(e, i) for e, i, _ in theirs] == [(e, i) for e, i, _ in ours[:1]] == [("log", "1")]
    assert_same_shape(theirs[0][2], ours[0][2])
    assert theirs[0][2]["data"] == ours[0][2]["data"]
    # Last-Event-ID counts as since on a plain read too.
    a, b = both(pair, "GET", lambda i: f"/v1/processes/{i}/logs", ids, headers={"Last-Event-ID": "1"})
    assert a.json()["entries"] == b.json()["entries"] == []
    assert ours[1][0] == "exit", "exit-event"


def test_stop_wait_ms(pair: tuple[httpx.Client, httpx.Client]) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    made = create_both(pair, {"command": "sh", "args": ["-c", script]})
    ids = (made[0]["id"], made[1]["id"])
    began = time.monotonic()
    a, b = both(pair, "POST", lambda i: f"/v1/processes/{i}/stop", ids, params={"waitMs": "200"})
    assert time.monotonic() - began >= 0.4
    assert a.json()["status"] == b.json()["status"] == "running"
    assert_same_shape(a.json(), b.json(), allowed_extra={"cwd": "cwd-shown"})
    a, b = both(pair, "POST", lambda i: f"/v1/processes/{i}/kill", ids)
    assert a.json()["status"] == b.json()["status"] == "exited"
    assert_same_shape(a.json(), b.json(), allowed_extra={"cwd": "cwd-shown", "exitSignal": "exit-signal"})

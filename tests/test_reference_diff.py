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
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

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
    "input-needs-stdin": "input to a process started with neither interactive nor tty: the original accepts it "
    "(its stdin is always a pipe, `interactive` is only a label); ours has /dev/null as stdin, so the input is a 409 "
    "that says to start it with interactive: true (SPEC 7: 409 when the process takes no input)",
    "closed-stdin-409": "input to a process whose child closed its stdin: the original answers 502 stream_error "
    "(broken pipe) each time; ours is a 409 conflict once the supervisor, which holds the pipe, has recorded it "
    "(input sent before that is accepted and dropped)",
    "json-any-content-type": "a POST body is read as JSON whatever its Content-Type says (curl -d sends form "
    "encoding); the original answers 415 unless it is application/json",
    "ws-close-code": "after the exit frame, or a client's close frame, our server closes the terminal WebSocket "
    "with 1000 (normal closure); the original sends a Close frame without a code (clients see 1005)",
    "partial-line-newline": "pipe output that does not end in a newline (cat echoing `x`) is written to the durable "
    "line logs as a line of its own once it has waited a bounded time (SPEC 4), so its entry's data ends in a newline "
    "the process did not write; the original's entry is the read chunk as is. A terminal's (pty) entries are raw bytes",
    "sampled-usage": "extension: a running process shows `ports` (TCP ports its tree listens on) and `usage` (CPU and "
    "memory of its tree), sampled once a second, so present from at most a second after its start (SPEC 8)",
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


#: What a running process of ours may show besides the original's keys.
RUNNING = {"cwd": "cwd-shown", "ports": "sampled-usage", "usage": "sampled-usage"}


def test_process_info_running_exited_stopped(pair: tuple[httpx.Client, httpx.Client]) -> None:
    running = create_both(pair, {"command": "sleep", "args": ["30"]})
    assert_same_shape(*running, allowed_extra=RUNNING)
    assert running[0]["status"] == running[1]["status"] == "running"
    ids = (running[0]["id"], running[1]["id"])
    assert_same_shape(*[r.json() for r in both(pair, "GET", lambda i: f"/v1/processes/{i}", ids)],
                      allowed_extra=RUNNING)  # fmt: skip
    a, b = both(pair, "GET", "/v1/processes")
    assert_same_shape(a.json(), b.json(), allowed_extra=RUNNING)
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
    # A cwd given: both show it. (The shapes are compared once both exited: `exit 3` may
    # already be over when either server answers the create, which then has no pid.)
    assert coded[0]["cwd"] == coded[1]["cwd"] == "/tmp"
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
    assert_same_shape(a.json(), b.json(), allowed_extra=RUNNING)
    a, b = both(pair, "POST", lambda i: f"/v1/processes/{i}/kill", ids)
    assert a.json()["status"] == b.json()["status"] == "exited"
    assert_same_shape(a.json(), b.json(), allowed_extra={"cwd": "cwd-shown", "exitSignal": "exit-signal"})


# -- input, resize and the terminal WebSocket -------------------------------------------


def pty_text(client: httpx.Client, process_id: str) -> str:
    entries = client.get(f"/v1/processes/{process_id}/logs", params={"stream": "pty"}).json()["entries"]
    return "".join(base64.b64decode(e["data"]).decode(errors="replace") for e in entries)


def wait_pty_both(pair: tuple[httpx.Client, httpx.Client], ids: tuple[str, str], needle: str) -> None:
    for client, process_id, who in zip(pair, ids, ("the reference", "ours"), strict=True):
        wait_for(lambda c=client, i=process_id: needle in pty_text(c, i), 10, f"{needle!r} in {who}'s pty log")


def kill_both(pair: tuple[httpx.Client, httpx.Client], ids: tuple[str, str]) -> None:
    a, b = both(pair, "POST", lambda i: f"/v1/processes/{i}/kill", ids, params={"waitMs": "5000"})
    assert a.json()["status"] == b.json()["status"] == "exited"


def test_input(pair: tuple[httpx.Client, httpx.Client]) -> None:
    made = create_both(pair, {"command": "cat", "interactive": True})
    ids = (made[0]["id"], made[1]["id"])
    path = lambda i: f"/v1/processes/{i}/input"  # noqa: E731
    for body in (
        {"data": base64.b64encode(b"one\n").decode()},  # base64 by default
        {"data": base64.b64encode(b"two\n").decode(), "encoding": None},  # null: the default too
        {"data": "trés\n", "encoding": "utf8"},
        {"data": "four\n", "encoding": "text"},
        {"data": ""},
        {"data": "eA==", "eof": False},  # unknown to the original: ignored
    ):
        a, b = both(pair, "POST", path, ids, json=body)
        assert a.status_code == b.status_code == 200, (body, a.text, b.text)
        assert a.json() == b.json(), body
    expected = "one\ntwo\ntrés\nfour\nx"
    for client, process_id, end in zip(pair, ids, ("", "\n"), strict=True):  # "partial-line-newline"
        stdout = lambda c=client, i=process_id: decoded(c.get(f"/v1/processes/{i}/logs"), "stdout")  # noqa: E731
        wait_for(lambda s=stdout, e=end: s() == expected + e, 10, "cat's echo of the input")  # type: ignore[misc]

    # Errors in the original's order: the body (422), its encoding (400), its size (413),
    # all before the process is looked up (404).
    too_big_utf8 = {"data": "x" * 65537, "encoding": "utf8"}
    too_big_b64 = {"data": base64.b64encode(b"x" * 65537).decode()}
    bad = (
        {"data": "!!"},
        {"data": "aGk"},
        {"data": "x"},
        {"data": "hi there"},
        {"data": "x", "encoding": "hex"},
        {"data": "x", "encoding": "UTF-8"},
        too_big_utf8,
        too_big_b64,
        {},  # 422, "plain-text-errors"
        {"data": 1},  # 422
        {"data": "x", "encoding": 5},  # 422
    )
    for body in bad:
        assert_same_problem(*both(pair, "POST", path, ids, json=body))
        assert_same_problem(*both(pair, "POST", "/v1/processes/no-such-process/input", json=body))
    assert_same_problem(*both(pair, "POST", "/v1/processes/no-such-process/input", json={"data": "aGkK"}))  # 404
    just_fits = both(pair, "POST", path, ids, json={"data": "y" * 65536, "encoding": "utf8"})
    assert just_fits[0].json() == just_fits[1].json() == {"bytesWritten": 65536}
    # Not JSON by its Content-Type: the original refuses, we read the body all the same.
    a, b = both(pair, "POST", path, ids, content=b'{"data": "aGkK"}')
    assert (a.status_code, b.status_code) == (415, 200), "json-any-content-type"
    assert_same_problem(*both(pair, "GET", path, ids))  # 405, "plain-text-errors"

    kill_both(pair, ids)
    assert_same_problem(*both(pair, "POST", path, ids, json={"data": "aGkK"}))  # 409: not running

    # A terminal takes input; what it echoes lands in the pty log.
    made = create_both(pair, {"command": "sh", "tty": True})
    ids = (made[0]["id"], made[1]["id"])
    a, b = both(pair, "POST", path, ids, json={"data": "echo in-$((2*21))\n", "encoding": "utf8"})
    assert a.json() == b.json() == {"bytesWritten": 18}
    wait_pty_both(pair, ids, "in-42\r\n")
    kill_both(pair, ids)
    assert_same_problem(*both(pair, "POST", path, ids, json={"data": "aGkK"}))  # 409

    # Neither interactive nor tty: the original writes to the pipe it always makes, ours
    # has no stdin to write to.
    made = create_both(pair, {"command": "sleep", "args": ["30"]})
    ids = (made[0]["id"], made[1]["id"])
    a, b = both(pair, "POST", path, ids, json={"data": "aGkK"})
    assert (a.status_code, b.status_code) == (200, 409), "input-needs-stdin"
    assert a.json() == {"bytesWritten": 3}
    assert b.json()["type"] == "urn:sandbox-agent:error:conflict"
    kill_both(pair, ids)

    # The child closed its stdin.
    made = create_both(pair, {"command": "sh", "args": ["-c", "exec 0<&-; echo closed; exec sleep 30"],
                              "interactive": True})  # fmt: skip
    ids = (made[0]["id"], made[1]["id"])
    for client, process_id in zip(pair, ids, strict=True):
        wait_for(lambda c=client, i=process_id: "closed" in decoded(c.get(f"/v1/processes/{i}/logs"), "stdout"))
    a = pair[0].post(path(ids[0]), json={"data": "aGkK"})
    b = wait_for(
        lambda: (r := pair[1].post(path(ids[1]), json={"data": "aGkK"})).status_code != 200 and r,
        10,
        "our refusal of input to a closed stdin",
    )
    assert (a.status_code, b.status_code) == (502, 409), "closed-stdin-409"
    assert a.json()["type"] == "urn:sandbox-agent:error:stream_error"
    assert b.json()["type"] == "urn:sandbox-agent:error:conflict"
    kill_both(pair, ids)


def test_resize(pair: tuple[httpx.Client, httpx.Client]) -> None:
    path = lambda i: f"/v1/processes/{i}/terminal/resize"  # noqa: E731
    made = create_both(pair, {"command": "sh", "tty": True, "interactive": True})
    ids = (made[0]["id"], made[1]["id"])
    for size in ({"cols": 0, "rows": 0}, {"cols": 65535, "rows": 65535}, {"cols": 100, "rows": 30, "extra": 1}):
        a, b = both(pair, "POST", path, ids, json=size)
        assert a.status_code == b.status_code == 200, (size, a.text, b.text)
        assert a.json() == b.json() == {"cols": size["cols"], "rows": size["rows"]}
    a, b = both(
        pair, "POST", lambda i: f"/v1/processes/{i}/input", ids, json={"data": "stty size\n", "encoding": "utf8"}
    )
    assert a.status_code == b.status_code == 200
    wait_pty_both(pair, ids, "30 100\r\n")
    for size in (
        {"cols": 65536, "rows": 1},
        {"cols": -1, "rows": 1},
        {"cols": "80", "rows": 1},
        {"cols": 1.5, "rows": 1},
        {"cols": 80.0, "rows": 24},
        {"cols": True, "rows": 24},
        {"cols": 80},
        {"rows": 24},
        {"cols": None, "rows": 24},
    ):  # all 422 ("plain-text-errors"), before the process is looked up
        assert_same_problem(*both(pair, "POST", path, ids, json=size))
        assert_same_problem(*both(pair, "POST", "/v1/processes/no-such-process/terminal/resize", json=size))
    assert_same_problem(*both(pair, "POST", "/v1/processes/no-such-process/terminal/resize",
                              json={"cols": 80, "rows": 24}))  # fmt: skip
    assert_same_problem(*both(pair, "GET", path, ids))  # 405
    kill_both(pair, ids)
    assert_same_problem(*both(pair, "POST", path, ids, json={"cols": 80, "rows": 24}))  # 409: exited

    for body in ({"command": "cat", "interactive": True}, {"command": "sleep", "args": ["30"]}):
        made = create_both(pair, body)
        ids = (made[0]["id"], made[1]["id"])
        assert_same_problem(*both(pair, "POST", path, ids, json={"cols": 80, "rows": 24}))  # 409: no tty
        kill_both(pair, ids)
        assert_same_problem(*both(pair, "POST", path, ids, json={"cols": 80, "rows": 24}))  # 409


class Frames:
    """What one terminal WebSocket received: text frames parsed, binary frames as output."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.output = bytearray()
        self.texts: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed = False

    def _next(self, deadline: float) -> None:
        try:
            frame = self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            return
        except ConnectionClosed as exc:
            self.closed = True
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
            return
        if isinstance(frame, bytes):
            self.output += frame
        else:
            self.texts.append(json.loads(frame))

    def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"no {what}; got {self.texts} and {bytes(self.output[-500:])!r}")
            self._next(deadline)

    def text(self, what: str) -> dict[str, Any]:
        """The next text frame."""
        count = len(self.texts)
        self.until(lambda: len(self.texts) > count, what)
        return self.texts[-1]

    def read_until(self, needle: bytes) -> None:
        self.until(lambda: needle in self.output, repr(needle))

    def end(self) -> None:
        """Read to the server's close."""
        deadline = time.monotonic() + 10
        while not self.closed:
            assert time.monotonic() < deadline, "the server did not close the WebSocket"
            self._next(deadline)

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))


@contextlib.contextmanager
def terminals(pair: tuple[httpx.Client, httpx.Client], ids: tuple[str, str]) -> Iterator[tuple[Frames, Frames]]:
    """(theirs, ours): one WebSocket to each, with the ready frame read and compared."""
    urls = [
        f"{str(client.base_url).replace('http', 'ws', 1).rstrip('/')}/v1/processes/{i}/terminal/ws"
        for client, i in zip(pair, ids, strict=True)
    ]
    with connect(urls[0]) as a, connect(urls[1]) as b:
        assert a.subprotocol is None
        assert b.subprotocol is None
        frames = (Frames(a), Frames(b))
        for side, process_id in zip(frames, ids, strict=True):
            assert side.text("the ready frame") == {"type": "ready", "processId": process_id}
        yield frames


def ws_refusals(pair: tuple[httpx.Client, httpx.Client], ids: tuple[str, str]) -> tuple[Any, Any]:
    """The answers (status, headers, body) to a WebSocket handshake that both refuse."""
    answers = []
    for client, process_id in zip(pair, ids, strict=True):
        url = f"{str(client.base_url).replace('http', 'ws', 1).rstrip('/')}/v1/processes/{process_id}/terminal/ws"
        with pytest.raises(InvalidStatus) as caught, connect(url):
            pass
        answers.append(caught.value.response)
    return answers[0], answers[1]


def assert_same_refusal(theirs: Any, ours: Any) -> None:
    assert theirs.status_code == ours.status_code, (theirs.body, ours.body)
    assert theirs.headers["content-type"] == ours.headers["content-type"] == "application/problem+json"
    a, b = json.loads(theirs.body), json.loads(ours.body)
    assert (a["type"], a["title"], a["status"]) == (b["type"], b["title"], b["status"]), (a, b)
    assert set(b) == {"type", "title", "status", "detail"}
    assert set(a) - set(b) <= {"details"}, "problem-details"


def test_terminal_websocket(pair: tuple[httpx.Client, httpx.Client]) -> None:
    made = create_both(pair, {"command": "sh", "tty": True, "interactive": True})
    ids = (made[0]["id"], made[1]["id"])
    with terminals(pair, ids) as sides:
        # Input (utf8 by default here), and the output as binary frames.
        for side in sides:
            side.send({"type": "input", "data": "echo answer-$((6*7))\n"})
            side.read_until(b"answer-42\r\n")
            side.send(
                {"type": "input", "data": base64.b64encode(b"echo b64-$((1+1))\n").decode(), "encoding": "base64"}
            )
            side.read_until(b"b64-2\r\n")
            side.send({"type": "input", "data": "echo text-$((1+2))\n", "encoding": "text", "extra": True})
            side.read_until(b"text-3\r\n")
        # A frame the server cannot use: an error frame each, and the connection stays.
        for bad in (
            "not json",
            "[]",
            '{"data": "x"}',
            '{"type": "bogus"}',
            '{"type": "input"}',
            '{"type": "input", "data": 1}',
            '{"type": "input", "data": "x", "encoding": "hex"}',
            '{"type": "input", "data": "!!", "encoding": "base64"}',
            json.dumps({"type": "input", "data": "x" * 65537}),
            '{"type": "resize", "cols": 80}',
            '{"type": "resize", "cols": -1, "rows": 1}',
            '{"type": "resize", "cols": 70000, "rows": 1}',
            b"binary",
        ):
            errors = []
            for side in sides:
                side.send(bad)
                errors.append(side.text(f"an error frame for {bad!r}"))
            assert set(errors[0]) == set(errors[1]) == {"type", "message"}, errors
            assert errors[0]["type"] == errors[1]["type"] == "error"
            assert isinstance(errors[1]["message"], str)
        # Resize through the socket; nothing is acknowledged, stty sees it.
        for side in sides:
            side.send({"type": "resize", "cols": 100, "rows": 33})
            side.send({"type": "input", "data": "stty size\n"})
            side.read_until(b"33 100\r\n")
            side.send({"type": "input", "data": "exit 5\n"})
        exits = []
        for side in sides:
            exits.append(side.text("the exit frame"))
            side.end()
        assert exits == [{"type": "exit", "exitCode": 5}] * 2
        theirs, ours = sides
        assert b"[process stream error" in theirs.output, "no-eio-output"
        assert b"[process stream error" not in ours.output
        assert (theirs.close_code, ours.close_code) == (1005, 1000), "ws-close-code"
    final = wait_exited_both(pair, ids)
    assert final[0]["exitCode"] == final[1]["exitCode"] == 5

    # An exited tty process: ready, then the exit at once, then the close.
    with terminals(pair, ids) as sides:
        for side in sides:
            assert side.text("the exit frame") == {"type": "exit", "exitCode": 5}
            side.end()

    # A close frame ends the connection and leaves the process running.
    made = create_both(pair, {"command": "cat", "tty": True})
    ids = (made[0]["id"], made[1]["id"])
    with terminals(pair, ids) as sides:
        for side in sides:
            side.send({"type": "input", "data": "ping\n"})
            side.read_until(b"ping\r\n")
            side.send({"type": "close"})
            side.end()
            assert side.texts == [{"type": "ready", "processId": side.texts[0]["processId"]}]
    a, b = both(pair, "GET", lambda i: f"/v1/processes/{i}", ids)
    assert a.json()["status"] == b.json()["status"] == "running"
    # Killed while attached: the exit frame holds a null exitCode.
    with terminals(pair, ids) as sides:
        kill_both(pair, ids)
        for side in sides:
            assert side.text("the exit frame") == {"type": "exit", "exitCode": None}
            side.end()

    # Refused before the upgrade: an unknown id (404), a process without a terminal (409).
    assert_same_refusal(*ws_refusals(pair, ("no-such-process", "no-such-process")))
    made = create_both(pair, {"command": "cat", "interactive": True})
    ids = (made[0]["id"], made[1]["id"])
    theirs, ours = ws_refusals(pair, ids)
    assert theirs.status_code == ours.status_code == 409
    assert_same_refusal(theirs, ours)
    # A plain GET of the path: 400 ("plain-text-errors").
    assert_same_problem(*both(pair, "GET", lambda i: f"/v1/processes/{i}/terminal/ws", ids))
    assert_same_problem(*both(pair, "GET", "/v1/processes/no-such-process/terminal/ws"))
    kill_both(pair, ids)


def test_terminal_websocket_token(
    reference_installed: Path, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """Both with a token: on the WebSocket it may come as ?access_token= (where the SDK puts
    it) or as the header; without it the handshake is a 401 problem, unknown id or not."""
    token = "ws-secret"
    reference = Reference(tmp_path, token=token)
    server = server_factory(token=token)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=reference.url, headers=headers, timeout=30) as a, server.client() as b:
            pair = (a, b)
            made = create_both(pair, {"command": "cat", "tty": True})
            ids = (made[0]["id"], made[1]["id"])
            bases = [url.replace("http", "ws", 1) for url in (reference.url, server.url)]
            for query, extra in (
                ("", {}),
                ("?access_token=wrong", {}),
                ("?access_token=wrong", {"Authorization": "Bearer wrong"}),
                ("?token=" + token, {}),
            ):
                answers = []
                for base, process_id in zip(bases, ids, strict=True):
                    for target in (process_id, "no-such-process"):
                        url = f"{base}/v1/processes/{target}/terminal/ws{query}"
                        with pytest.raises(InvalidStatus) as caught, connect(url, additional_headers=extra):
                            pass
                        answers.append(caught.value.response)
                # [theirs, theirs unknown id, ours, ours unknown id]
                for theirs, ours in ((answers[0], answers[2]), (answers[1], answers[3])):
                    assert theirs.status_code == ours.status_code == 401, (query, extra)
                    assert_same_refusal(theirs, ours)
            for query, extra in (
                (f"?access_token={token}", {}),
                ("", headers),
                ("?access_token=wrong", headers),  # the header is enough
            ):
                for base, process_id in zip(bases, ids, strict=True):
                    url = f"{base}/v1/processes/{process_id}/terminal/ws{query}"
                    with connect(url, additional_headers=extra) as ws:
                        frames = Frames(ws)
                        assert frames.text("the ready frame") == {"type": "ready", "processId": process_id}
            # The query token is for the WebSocket alone.
            for base_url in (reference.url, server.url):
                response = httpx.get(f"{base_url}/v1/processes", params={"access_token": token})
                assert response.status_code == 401
            kill_both(pair, ids)
    finally:
        reference.stop()

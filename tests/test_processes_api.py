"""The ``/v1/processes`` dialect (SPEC section 7) on a real server with real processes."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, marked_pids, py, sse_events, start, wait_for

CONFIG_DEFAULTS = {
    "maxConcurrentProcesses": 64,
    "defaultRunTimeoutMs": 30000,
    "maxRunTimeoutMs": 300000,
    "maxOutputBytes": 1048576,
    "maxLogBytesPerProcess": 10485760,
    "maxInputBytesPerRequest": 65536,
}
INFO_KEYS = {"id", "command", "args", "tty", "interactive", "owner", "status", "createdAtMs"}


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/processes", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def wait_exited(client: httpx.Client, process_id: str, timeout: float = 15.0) -> dict[str, Any]:
    def exited() -> dict[str, Any] | None:
        info: dict[str, Any] = client.get(f"/v1/processes/{process_id}").json()
        return info if info["status"] == "exited" else None

    result: dict[str, Any] = wait_for(exited, timeout, f"process {process_id} to exit")
    return result


def entries(client: httpx.Client, process_id: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/processes/{process_id}/logs", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["entries"]
    return found


def texts(found: list[dict[str, Any]]) -> list[str]:
    return [base64.b64decode(entry["data"]).decode() for entry in found]


def wait_entries(client: httpx.Client, process_id: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = entries(client, process_id)
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = wait_for(enough, 10, f"{count} log entries of {process_id}")
    return result


def assert_problem(response: httpx.Response, status: int, kind: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:sandbox-agent:error:{kind}"
    assert body["status"] == status
    for needle in needles:
        assert needle.lower() in body["detail"].lower(), body["detail"]
    return body


@pytest.fixture
def client(checked_shared_server: Server) -> Iterator[httpx.Client]:
    with checked_shared_server.client() as c:
        yield c


@pytest.fixture
def finished(client: httpx.Client) -> dict[str, Any]:
    """A process that wrote out 1, err 1, out 2, err 2, out 3 and exited 3.

    stdout and stderr are two pipes: how their lines interleave in the log is up to the
    reader, so tests take the order from the log.
    """
    code = (
        "import sys\n"
        "for i in (1, 2):\n"
        "    print(f'out {i}', flush=True); print(f'err {i}', file=sys.stderr, flush=True)\n"
        "print('out 3', flush=True); sys.exit(3)"
    )
    process = create(client, py(code))
    wait_exited(client, process["id"])
    return process


# -- config --------------------------------------------------------------------------


def test_config_defaults_replace_and_validation(server: Server) -> None:
    with server.client() as c:
        assert c.get("/v1/processes/config").json() == CONFIG_DEFAULTS
        assert list(c.get("/v1/processes/config").json()) == list(CONFIG_DEFAULTS)  # the original's order
        new = dict(CONFIG_DEFAULTS, maxConcurrentProcesses=3, defaultRunTimeoutMs=500_000)
        stored = c.post("/v1/processes/config", json=new)
        assert stored.status_code == 200
        # A default above the max is clamped to it, as the original does.
        assert stored.json() == dict(new, defaultRunTimeoutMs=300_000)
        for field, words in [
            ("maxConcurrentProcesses", "maxConcurrentProcesses"),
            ("maxRunTimeoutMs", "timeouts"),
            ("maxOutputBytes", "byte limits"),
        ]:
            assert_problem(
                c.post("/v1/processes/config", json=dict(CONFIG_DEFAULTS, **{field: 0})), 400, "invalid_request", words
            )
        partial = dict(CONFIG_DEFAULTS)
        del partial["maxOutputBytes"]
        assert_problem(c.post("/v1/processes/config", json=partial), 422, "invalid_request", "maxOutputBytes")
        assert_problem(
            c.post("/v1/processes/config", json=dict(CONFIG_DEFAULTS, maxOutputBytes=-1)), 422, "invalid_request"
        )
        assert c.get("/v1/processes/config").json()["maxConcurrentProcesses"] == 3


def test_config_survives_a_restart(server: Server) -> None:
    wanted = dict(CONFIG_DEFAULTS, maxConcurrentProcesses=5, maxOutputBytes=7)
    with server.client() as c:
        assert c.post("/v1/processes/config", json=wanted).status_code == 200
    assert json.loads((server.data_dir / "config.json").read_text()) == wanted
    server.restart()
    with server.client() as c:
        assert c.get("/v1/processes/config").json() == wanted
        run = c.post("/v1/processes/run", json={"command": "echo", "args": ["0123456789"]}).json()
        assert run["stdout"] == "0123456"
        assert run["stdoutTruncated"] is True


# -- create, get, list ------------------------------------------------------------------


def test_create_answers_with_a_process_info(client: httpx.Client, tmp_path: Path) -> None:
    info = create(client, {"command": "sleep", "args": ["30"], "cwd": str(tmp_path), "env": {"A": "b"}})
    try:
        assert set(info) == INFO_KEYS | {"cwd", "pid"}
        assert info["status"] == "running"
        assert info["owner"] == "user"
        assert info["tty"] is False
        assert info["interactive"] is False
        assert info["cwd"] == str(tmp_path)
        assert isinstance(info["pid"], int)
        assert abs(info["createdAtMs"] - time.time() * 1000) < 60_000
        assert client.get(f"/v1/processes/{info['id']}").json() == info
    finally:
        client.post(f"/v1/processes/{info['id']}/kill")
    # Optional fields are left out, not null: no pid once exited. (Unlike the original we
    # show the directory a process runs in even when the request gave none.)
    done = create(client, {"command": "true"})
    exited = wait_exited(client, done["id"])
    assert set(exited) == INFO_KEYS | {"cwd", "exitCode", "exitedAtMs"}
    assert exited["exitCode"] == 0
    assert exited["exitedAtMs"] >= exited["createdAtMs"]


def test_create_errors(client: httpx.Client) -> None:
    assert_problem(client.post("/v1/processes", json={"command": "  "}), 400, "invalid_request", "command")
    assert_problem(client.post("/v1/processes", json={}), 422, "invalid_request", "command")
    assert_problem(client.post("/v1/processes", json={"command": "x", "args": [1]}), 422, "invalid_request")
    assert_problem(client.post("/v1/processes", json={"command": "x", "tty": None}), 422, "invalid_request")
    # The original answers a missing command with 502 after trying; we check before.
    assert_problem(client.post("/v1/processes", json={"command": "no-such-tool-xyz"}), 400, "invalid_request")
    # Not JSON: the original answers text/plain here; we answer problem+json (house rule).
    response = client.post("/v1/processes", content=b"{nope", headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_request", "not valid JSON")


def test_a_terminal_through_this_dialect(client: httpx.Client) -> None:
    body = {"command": "sh", "tty": True, "terminalSize": {"cols": 100, "rows": 30}, "env": {"PS1": "$ "}}
    info = create(client, body)
    assert (info["tty"], info["interactive"], info["terminalSize"]) == (True, False, {"cols": 100, "rows": 30})
    path = f"/v1/processes/{info['id']}"
    written = client.post(f"{path}/input", json={"data": "stty size; exit 5\n", "encoding": "utf8"})
    assert written.json() == {"bytesWritten": 18}

    def output() -> bytes:
        return b"".join(base64.b64decode(e["data"]) for e in entries(client, info["id"]))

    wait_for(lambda: b"30 100" in output(), 10, "stty size on the terminal")
    found = entries(client, info["id"])  # stream pty by default for a tty process
    assert {e["stream"] for e in found} == {"pty"}
    assert [e["sequence"] for e in found] == list(range(1, len(found) + 1))
    assert entries(client, info["id"], stream="combined") == []  # a terminal has no pipes
    assert wait_exited(client, info["id"])["exitCode"] == 5

    # The follow gives the same entries, resumes after a sequence, and ends with the exit.
    with client.stream("GET", f"{path}/logs", params={"follow": "true"}) as response:
        events = list(sse_events(response))
    logs = [e for e in events if e.event == "log"]
    assert [json.loads(e.data)["sequence"] for e in logs] == [e["sequence"] for e in found]
    assert events[-1].event == "exit"
    assert json.loads(events[-1].data)["exitCode"] == 5
    headers = {"Last-Event-ID": str(found[0]["sequence"])}
    with client.stream("GET", f"{path}/logs", params={"follow": "true"}, headers=headers) as response:
        resumed = [e for e in sse_events(response) if e.event == "log"]
    assert [json.loads(e.data)["sequence"] for e in resumed] == [e["sequence"] for e in found[1:]]


def test_max_concurrent_processes(server: Server) -> None:
    with server.client() as c:
        c.post("/v1/processes/config", json=dict(CONFIG_DEFAULTS, maxConcurrentProcesses=2))
        first = create(c, {"command": "sleep", "args": ["30"]})
        second = create(c, {"command": "sleep", "args": ["30"]})
        assert_problem(
            c.post("/v1/processes", json={"command": "sleep", "args": ["30"]}), 409, "conflict", "limit reached (2)"
        )
        # The old dialect has no such limit, and runs do not count.
        third = start(c, {"command": "sleep", "args": ["30"]})
        assert c.post("/v1/processes/run", json={"command": "true"}).json()["exitCode"] == 0
        for process in (first, second, third):
            c.post(f"/v1/processes/{process['id']}/kill")
        wait_exited(c, third["id"])
        create(c, {"command": "true"})


def test_list_oldest_first_and_owner_filter(client: httpx.Client) -> None:
    ids = [create(client, {"command": "true"})["id"] for _ in range(3)]
    listed = [p["id"] for p in client.get("/v1/processes").json()["processes"]]
    assert [i for i in listed if i in ids] == ids
    assert [p["id"] for p in client.get("/v1/processes", params={"owner": "user"}).json()["processes"]] == listed
    assert client.get("/v1/processes", params={"owner": "system"}).json() == {"processes": []}
    assert_problem(client.get("/v1/processes", params={"owner": "bogus"}), 400, "invalid_request", "owner")
    for process_id in ids:
        wait_exited(client, process_id)
        assert client.delete(f"/v1/processes/{process_id}").status_code == 204


def test_unknown_ids_are_404_whatever_their_shape(client: httpx.Client) -> None:
    for bad in ("proc_1", "nope", "01m8fg0000000000000000000z", "caf%C3%A9"):
        for method, path in [
            ("GET", f"/v1/processes/{bad}"),
            ("DELETE", f"/v1/processes/{bad}"),
            ("POST", f"/v1/processes/{bad}/stop"),
            ("POST", f"/v1/processes/{bad}/kill"),
            ("GET", f"/v1/processes/{bad}/logs"),
            ("GET", f"/v1/processes/{bad}/logs?follow=true"),
        ]:
            assert_problem(client.request(method, path), 404, "not_found", "no process")


def test_wrong_method_and_unknown_route_are_problems(client: httpx.Client) -> None:
    assert_problem(client.put("/v1/processes/config"), 405, "invalid_request")
    # An unknown route is the original's invalid_request kind (an unknown process is not_found).
    assert_problem(client.get("/v1/processes/x/y/z"), 404, "invalid_request")


# -- stop, kill, delete --------------------------------------------------------------


def test_stop_waits_for_the_exit_and_answers_with_the_process(client: httpx.Client) -> None:
    info = create(client, {"command": "sleep", "args": ["30"]})
    stopped = client.post(f"/v1/processes/{info['id']}/stop")
    assert stopped.status_code == 200
    body = stopped.json()
    assert body["status"] == "exited"
    assert "pid" not in body
    assert "exitCode" not in body
    assert body["exitSignal"] == 15
    # On an exited process: the same record, nothing sent.
    assert client.post(f"/v1/processes/{info['id']}/stop").json() == body
    assert client.post(f"/v1/processes/{info['id']}/kill").json() == body


def test_stop_of_a_process_that_handles_sigterm_reports_its_code(client: httpx.Client) -> None:
    code = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\nprint('ready')\nsignal.pause()"
    info = create(client, py(code))
    wait_entries(client, info["id"], 1)
    body = client.post(f"/v1/processes/{info['id']}/stop").json()
    assert body["status"] == "exited"
    assert body["exitCode"] == 7


def test_wait_ms_bounds_the_wait(client: httpx.Client) -> None:
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready')\nsignal.pause()"
    info = create(client, py(code))
    wait_entries(client, info["id"], 1)
    began = time.monotonic()
    body = client.post(f"/v1/processes/{info['id']}/stop", params={"waitMs": 300}).json()
    elapsed = time.monotonic() - began
    assert body["status"] == "running"
    assert "pid" in body
    assert 0.25 < elapsed < 5
    began = time.monotonic()
    assert client.post(f"/v1/processes/{info['id']}/stop", params={"waitMs": 0}).json()["status"] == "running"
    assert time.monotonic() - began < 1
    killed = client.post(f"/v1/processes/{info['id']}/kill").json()  # default wait: 1000 ms
    assert killed["status"] == "exited"
    assert killed["exitSignal"] == 9
    assert_problem(client.post(f"/v1/processes/{info['id']}/kill", params={"waitMs": -1}), 400, "invalid_request")


def test_get_waits_for_the_exit_when_asked(client: httpx.Client) -> None:
    """Extension: GET ...?waitMs=N answers once the process exits (or after N ms)."""
    info = create(client, {**py("import sys\nsys.stdin.readline()\nsys.exit(3)"), "interactive": True})
    path = f"/v1/processes/{info['id']}"
    assert client.get(path, params={"waitMs": 50}).json()["status"] == "running"
    answers: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: answers.append(client.get(path, params={"waitMs": 60000}).json()))
    waiter.start()
    try:
        client.post(f"{path}/input", json={"data": "go\n", "encoding": "utf8"}).raise_for_status()
    finally:
        waiter.join(30)
    assert not waiter.is_alive()
    assert answers[0]["status"] == "exited"
    assert answers[0]["exitCode"] == 3
    # An exited process answers at once, whatever the wait.
    assert client.get(path, params={"waitMs": 60000}).json()["exitCode"] == 3
    for bad in ("-1", "300001", "soon"):
        assert_problem(client.get(path, params={"waitMs": bad}), 400, "invalid_request")


def test_delete(client: httpx.Client) -> None:
    info = create(client, {"command": "sleep", "args": ["30"]})
    assert_problem(client.delete(f"/v1/processes/{info['id']}"), 409, "conflict", "stop or kill it")
    client.post(f"/v1/processes/{info['id']}/kill")
    response = client.delete(f"/v1/processes/{info['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(f"/v1/processes/{info['id']}"), 404, "not_found")
    assert_problem(client.delete(f"/v1/processes/{info['id']}"), 404, "not_found")


def test_both_dialects_see_the_same_processes(client: httpx.Client) -> None:
    old = start(client, {"command": "sleep", "args": ["30"]})
    assert client.get(f"/v1/processes/{old['id']}").json()["status"] == "running"
    assert old["id"] in [p["id"] for p in client.get("/v1/processes").json()["processes"]]
    assert client.post(f"/v1/processes/{old['id']}/stop").json()["status"] == "exited"
    assert client.get(f"/v1/process/{old['id']}").json()["status"] == "stopped"
    assert client.delete(f"/v1/processes/{old['id']}").status_code == 204
    assert client.get(f"/v1/process/{old['id']}").status_code == 404

    new = create(client, {"command": "sleep", "args": ["30"]})
    assert client.get(f"/v1/process/{new['id']}").json()["status"] == "running"
    # The old dialect still answers a delete of a running process with its own 400.
    assert client.delete(f"/v1/process/{new['id']}").status_code == 400
    assert client.post(f"/v1/process/{new['id']}/kill").status_code == 204
    assert wait_exited(client, new["id"])["exitSignal"] == 9
    assert client.get(f"/v1/process/{new['id']}").json()["status"] == "killed"
    assert client.delete(f"/v1/process/{new['id']}").status_code == 204
    assert client.get(f"/v1/processes/{new['id']}").status_code == 404


# -- run -------------------------------------------------------------------------------


def test_run(client: httpx.Client, tmp_path: Path) -> None:
    result = client.post(
        "/v1/processes/run",
        json={
            "command": "sh",
            "args": ["-c", "pwd; echo $A; echo err >&2; cat; exit 3"],
            "cwd": str(tmp_path),
            "env": {"A": "from-env"},
        },
    ).json()
    assert list(result) == [
        "exitCode", "timedOut", "stdout", "stderr", "stdoutTruncated", "stderrTruncated", "durationMs"
    ]  # fmt: skip
    assert result["exitCode"] == 3
    assert result["timedOut"] is False
    assert result["stdout"] == f"{tmp_path}\nfrom-env\n"  # cat read /dev/null: nothing
    assert result["stderr"] == "err\n"
    assert (
        client.post("/v1/processes/run", json={"command": "sh", "args": ["-c", "kill -9 $$"]}).json()["exitCode"]
        is None
    )
    assert (
        client.post("/v1/processes/run", json={"command": "sh", "args": ["-c", "echo $TERM"]}).json()["stdout"]
        == "xterm-256color\n"
    )
    assert_problem(client.post("/v1/processes/run", json={"command": ""}), 400, "invalid_request")
    assert_problem(client.post("/v1/processes/run", json={"command": "x", "timeoutMs": -1}), 422, "invalid_request")
    # Not recorded as a process.
    assert all(p["command"] != "sh" or "kill -9" not in " ".join(p["args"]) for p in
               client.get("/v1/processes").json()["processes"])  # fmt: skip


def test_run_in_the_servers_directory_and_of_what_cannot_be_executed(client: httpx.Client, tmp_path: Path) -> None:
    """Without cwd a run starts in the server's directory, with stdin empty and SIGPIPE at
    its default (``yes | head`` ends); a file the kernel cannot run is a 400, not a 500."""
    result = client.post("/v1/processes/run", json={"command": "sh", "args": ["-c", "pwd; cat; yes | head -2"]})
    where, *rest = result.json()["stdout"].splitlines()
    assert Path(where).is_absolute()
    assert Path(where).is_dir()
    assert rest == ["y", "y"]
    assert result.json()["exitCode"] == 0
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01not a program")
    garbage.chmod(0o755)
    for cwd in (None, str(tmp_path)):
        body = {"command": str(garbage)} if cwd is None else {"command": "./garbage", "cwd": cwd}
        assert_problem(client.post("/v1/processes/run", json=body), 400, "invalid_request", "could not start")


def test_run_output_truncation(client: httpx.Client) -> None:
    script = "printf 0123456789abcdef; printf ERRERRERRERR >&2"
    cut = client.post("/v1/processes/run", json={"command": "sh", "args": ["-c", script], "maxOutputBytes": 5})
    assert cut.json() | {"durationMs": 0} == {
        "exitCode": 0, "timedOut": False, "stdout": "01234", "stderr": "ERRER",
        "stdoutTruncated": True, "stderrTruncated": True, "durationMs": 0,
    }  # fmt: skip
    exact = client.post("/v1/processes/run", json={"command": "printf", "args": ["12345"], "maxOutputBytes": 5})
    assert exact.json()["stdout"] == "12345"
    assert exact.json()["stdoutTruncated"] is False
    # Much more output than the cap is read and dropped: the command is never blocked.
    big = client.post(
        "/v1/processes/run",
        json={"command": "sh", "args": ["-c", "head -c 5000000 /dev/zero | tr '\\0' x"], "maxOutputBytes": 10},
    ).json()
    assert big["stdout"] == "x" * 10
    assert big["stdoutTruncated"] is True
    assert big["exitCode"] == 0


def test_run_timeout_kills_the_whole_group(client: httpx.Client, checked_shared_server: Server) -> None:
    began = time.monotonic()
    result = client.post(
        "/v1/processes/run",
        json={"command": "sh", "args": ["-c", "echo before; sleep 100 & sleep 100"], "timeoutMs": 300},
    ).json()
    assert time.monotonic() - began < 5
    assert result["timedOut"] is True
    assert result["exitCode"] is None
    assert result["stdout"] == "before\n"
    own = checked_shared_server.own_pids()
    wait_for(
        lambda: not {p: c for p, c in marked_pids(checked_shared_server.marker).items() if p not in own},
        5,
        "both sleeps to be gone",
    )


def test_run_timeout_is_capped_by_the_config(server: Server) -> None:
    with server.client() as c:
        c.post("/v1/processes/config", json=dict(CONFIG_DEFAULTS, defaultRunTimeoutMs=200, maxRunTimeoutMs=400))
        default = c.post("/v1/processes/run", json={"command": "sleep", "args": ["10"]}).json()
        assert default["timedOut"] is True
        assert 150 <= default["durationMs"] < 3000
        capped = c.post("/v1/processes/run", json={"command": "sleep", "args": ["10"], "timeoutMs": 60_000}).json()
        assert capped["timedOut"] is True
        assert 350 <= capped["durationMs"] < 3000


# -- logs --------------------------------------------------------------------------


def test_logs_as_entries(client: httpx.Client, finished: dict[str, Any]) -> None:
    process_id = finished["id"]
    response = client.get(f"/v1/processes/{process_id}/logs")
    body = response.json()
    assert body["processId"] == process_id
    assert body["stream"] == "combined"
    found = body["entries"]
    assert [e["sequence"] for e in found] == [1, 2, 3, 4, 5]
    by_stream = {name: [e for e in found if e["stream"] == name] for name in ("stdout", "stderr")}
    assert texts(by_stream["stdout"]) == ["out 1\n", "out 2\n", "out 3\n"]
    assert texts(by_stream["stderr"]) == ["err 1\n", "err 2\n"]
    err_seqs = [e["sequence"] for e in by_stream["stderr"]]
    for entry in found:
        assert list(entry) == ["sequence", "stream", "timestampMs", "data", "encoding"]
        assert entry["encoding"] == "base64"
        assert abs(entry["timestampMs"] - finished["createdAtMs"]) < 60_000
    # stdout/stderr filter, keeping the combined sequence numbers.
    assert entries(client, process_id, stream="stderr") == by_stream["stderr"]
    assert entries(client, process_id, stream="stdout") == by_stream["stdout"]
    assert entries(client, process_id, stream="pty") == []  # a pipe process has no terminal output
    assert [e["sequence"] for e in entries(client, process_id, since=2)] == [3, 4, 5]
    assert [e["sequence"] for e in entries(client, process_id, tail=2)] == [4, 5]
    assert [e["sequence"] for e in entries(client, process_id, since=4, tail=1)] == [5]
    assert [e["sequence"] for e in entries(client, process_id, tail=1, stream="stderr")] == err_seqs[-1:]
    assert [e["sequence"] for e in entries(client, process_id, since=err_seqs[0], stream="stderr")] == err_seqs[1:]
    assert entries(client, process_id, tail=0) == []
    assert entries(client, process_id, since=99) == []
    # Last-Event-ID counts as since; the larger wins.
    resumed = client.get(f"/v1/processes/{process_id}/logs", params={"since": 1}, headers={"Last-Event-ID": "3"})
    assert [e["sequence"] for e in resumed.json()["entries"]] == [4, 5]
    assert_problem(
        client.get(f"/v1/processes/{process_id}/logs", headers={"Last-Event-ID": "abc"}), 400, "invalid_request"
    )
    for params in ({"stream": "bogus"}, {"tail": -1}, {"since": "x"}, {"follow": "maybe"}, {"follow": "1"}):
        assert_problem(client.get(f"/v1/processes/{process_id}/logs", params=params), 400, "invalid_request")


def test_log_reads_are_capped_by_max_log_bytes(server: Server) -> None:
    with server.client() as c:
        c.post("/v1/processes/config", json=dict(CONFIG_DEFAULTS, maxLogBytesPerProcess=20))
        info = create(c, py("for i in range(8): print(f'line{i}')"))  # 6 bytes each
        wait_exited(c, info["id"])
        # Oldest first up to the budget; a reader pages on with since.
        assert [e["sequence"] for e in entries(c, info["id"])] == [1, 2, 3]
        assert [e["sequence"] for e in entries(c, info["id"], since=3)] == [4, 5, 6]
        # A tail gives the newest that fit.
        assert [e["sequence"] for e in entries(c, info["id"], tail=8)] == [6, 7, 8]


def test_tail_reads_from_the_end_of_a_large_log(client: httpx.Client) -> None:
    info = create(client, py("import sys\nfor i in range(200000): sys.stdout.write(f'{i}\\n')"))
    wait_exited(client, info["id"], 30)
    last = entries(client, info["id"], tail=3)
    assert [e["sequence"] for e in last] == [199998, 199999, 200000]
    assert texts(last) == ["199997\n", "199998\n", "199999\n"]
    assert texts(entries(client, info["id"], since=100000, tail=1)) == ["199999\n"]
    assert [e["sequence"] for e in entries(client, info["id"], since=150000)][:2] == [150001, 150002]


# -- follow ----------------------------------------------------------------------------

# Prints 'line <n>' for each file n it finds in a directory, in order, until 'stop' exists.
STEPPED = """
import os, sys, time
d = sys.argv[1]
n = 0
print('before', flush=True)
while True:
    if os.path.exists(os.path.join(d, str(n))):
        print(f'line {n}', flush=True)
        print(f'err {n}', file=sys.stderr, flush=True)
        n += 1
    elif os.path.exists(os.path.join(d, 'stop')):
        sys.exit(4)
    else:
        time.sleep(0.005)
"""


def stepped(client: httpx.Client, tmp_path: Path) -> tuple[str, Callable[[int], None], Callable[[], None]]:
    body = py(STEPPED)
    body["args"].append(str(tmp_path))
    info = create(client, body)
    wait_entries(client, info["id"], 1)
    return info["id"], lambda n: (tmp_path / str(n)).touch(), lambda: (tmp_path / "stop").touch()


def follow(client: httpx.Client, process_id: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    params.setdefault("follow", "true")
    return client.stream("GET", f"/v1/processes/{process_id}/logs", params=params, headers=headers or {})


def test_follow_replays_then_streams_then_ends_with_exit(client: httpx.Client, tmp_path: Path) -> None:
    process_id, step, stop = stepped(client, tmp_path)
    with follow(client, process_id) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        first = next(events)
        assert first.event == "log"
        assert first.id == "1"
        assert json.loads(first.data)["sequence"] == 1
        assert texts([json.loads(first.data)]) == ["before\n"]
        step(0)
        live = [next(events) for _ in range(2)]
        assert [e.id for e in live] == ["2", "3"]
        assert sorted(texts([json.loads(e.data) for e in live])) == ["err 0\n", "line 0\n"]
        stop()
        end = next(events)
        assert end.event == "exit"
        assert json.loads(end.data) == {"status": "exited", "exitCode": 4, "exitSignal": None}
        assert list(events) == []


def test_follow_stream_filter_and_tail(client: httpx.Client, tmp_path: Path) -> None:
    process_id, step, stop = stepped(client, tmp_path)
    step(0)
    wait_entries(client, process_id, 3)
    with follow(client, process_id, stream="stderr", tail=1) as response:
        events = sse_events(response)
        assert texts([json.loads(next(events).data)]) == ["err 0\n"]
        step(1)
        event = next(events)
        assert texts([json.loads(event.data)]) == ["err 1\n"]
        assert event.id in ("4", "5")  # the combined numbering
        stop()
        assert next(events).event == "exit"


def test_follow_resumes_across_a_restart_with_stable_sequences(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        process_id, step, stop = stepped(c, tmp_path)
        step(0)
        wait_entries(c, process_id, 3)
        with follow(c, process_id) as response:
            events = sse_events(response)
            seen = [next(events) for _ in range(2)]
        last_id = seen[-1].id
        assert last_id == "2"
        before = entries(c, process_id)
    server.restart()
    with server.client() as c:
        assert entries(c, process_id) == before  # same numbers after the restart
        step(1)  # written with no follower
        with follow(c, process_id, headers={"Last-Event-ID": last_id}) as response:
            events = sse_events(response)
            got = [next(events) for _ in range(3)]
            assert [e.id for e in got] == ["3", "4", "5"]
            step(2)
            got += [next(events) for _ in range(2)]
            stop()
            assert next(events).event == "exit"
        assert [int(e.id) for e in got] == [3, 4, 5, 6, 7]
        assert [json.loads(e.data)["sequence"] for e in got] == [3, 4, 5, 6, 7]
        assert sorted(texts([json.loads(e.data) for e in got])) == sorted(
            ["err 0\n", "line 1\n", "err 1\n", "line 2\n", "err 2\n"]
        )


def test_a_slow_follower_loses_nothing(client: httpx.Client) -> None:
    count = 60_000
    info = create(client, py(f"import sys\nfor i in range({count}): sys.stdout.write(f'{{i:08d}}' * 8 + '\\n')"))
    with follow(client, info["id"]) as response:
        sequences = []
        datas = []
        for event in sse_events(response):
            if event.event == "exit":
                break
            entry = json.loads(event.data)
            sequences.append(entry["sequence"])
            datas.append(entry["data"])
            if len(sequences) % 5000 == 0:
                time.sleep(0.05)  # reads slowly on purpose while the process writes fast
    assert sequences == list(range(1, count + 1))
    assert base64.b64decode(datas[-1]) == f"{count - 1:08d}".encode() * 8 + b"\n"


def test_a_follow_of_an_exited_process_replays_then_ends(client: httpx.Client) -> None:
    # (A process must have exited before it can be deleted, so a follow never outlives
    # its process: the exit event ends it first.)
    info = create(client, py("print('hi')"))
    wait_exited(client, info["id"])
    with follow(client, info["id"]) as response:
        kinds = [e.event for e in sse_events(response)]
    assert kinds == ["log", "exit"]


def test_openapi_describes_every_route(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method, request, response in [
        ("/v1/processes/config", "get", None, "ProcessConfig"),
        ("/v1/processes/config", "post", "ProcessConfig", "ProcessConfig"),
        ("/v1/processes", "post", "CreateProcess", "ProcessInfo"),
        ("/v1/processes", "get", None, "ProcessInfoList"),
        ("/v1/processes/run", "post", "RunProcess", "RunResult"),
        ("/v1/processes/{process_id}", "get", None, "ProcessInfo"),
        ("/v1/processes/{process_id}", "delete", None, None),
        ("/v1/processes/{process_id}/stop", "post", None, "ProcessInfo"),
        ("/v1/processes/{process_id}/kill", "post", None, "ProcessInfo"),
        ("/v1/processes/{process_id}/logs", "get", None, "ProcessLogs"),
    ]:
        operation = paths[path][method]
        if request is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith(f"/{request}"), (path, method)
        if response is not None:
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith(f"/{response}"), (path, method)
    schemas = spec["components"]["schemas"]
    assert set(schemas["ProcessLogEntry"]["properties"]) == {"sequence", "stream", "timestampMs", "data", "encoding"}
    assert {"waitMs"} <= {p["name"] for p in paths["/v1/processes/{process_id}/stop"]["post"]["parameters"]}
    assert {"stream", "tail", "since", "follow"} <= {
        p["name"] for p in paths["/v1/processes/{process_id}/logs"]["get"]["parameters"]
    }


def test_token_errors_speak_this_dialect(server_factory: Callable[..., Server]) -> None:
    server = server_factory(token="secret")
    with httpx.Client(base_url=server.url) as anonymous:
        body = assert_problem(anonymous.get("/v1/processes"), 401, "token_invalid", "Authorization: Bearer")
        assert body["title"] == "Token Invalid"
        # The old dialect keeps its own problem bodies.
        assert anonymous.get("/v1/process").json()["type"] == "about:blank"
    with server.client() as c:
        assert c.get("/v1/processes").json() == {"processes": []}


def test_a_run_does_not_outlive_a_crash_of_the_server(server: Server) -> None:
    """The launcher kills the run's whole group once the server is gone: the command and
    what it started in the background."""

    def run() -> None:
        with contextlib.suppress(httpx.TransportError), server.client() as c:
            body = {"command": "sh", "args": ["-c", "sleep 101 & sleep 100"], "timeoutMs": 200_000}
            c.post("/v1/processes/run", json=body)

    own = server.own_pids()
    runner = threading.Thread(target=run)
    runner.start()

    def sleeps() -> set[str]:
        return {cmd for pid, cmd in marked_pids(server.marker).items() if pid not in own and cmd.startswith("sleep")}

    wait_for(lambda: sleeps() == {"sleep 100", "sleep 101"}, 10, "the run's two sleeps")
    server.crash()
    runner.join(10)
    wait_for(lambda: not marked_pids(server.marker), 10, "the run's sleeps to be gone with the server")

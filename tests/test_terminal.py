"""Terminals and input, end to end: a real server, real shells on real ptys, WebSockets.

Processes are started through ``POST /v1/process`` (tty, interactive, terminalSize); the
terminal is driven through ``/v1/processes/{id}/input``, ``/terminal/resize`` and
``/terminal/ws``. Every wait is for expected output, with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import Server, py, start, wait_exited, wait_for, wait_log

UNKNOWN_ID = "0" * 26
BASH = {"command": "bash", "args": ["--norc", "--noprofile", "-i"], "env": {"PS1": "$ "}, "tty": True}


class Terminal:
    """One WebSocket client of a terminal: everything it received, and waits on it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.output = bytearray()
        self.messages: list[dict[str, Any]] = []
        ready = self._next(10)
        assert isinstance(ready, dict), ready
        assert ready["type"] == "ready", ready

    def _next(self, timeout: float) -> dict[str, Any] | bytes:
        frame = self.ws.recv(timeout=timeout)
        if isinstance(frame, bytes):
            self.output += frame
            return frame
        message: dict[str, Any] = json.loads(frame)
        self.messages.append(message)
        return message

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {bytes(self.output[-2000:])!r}")
            try:
                self._next(left)
            except TimeoutError:
                continue

    def read_until(self, needle: bytes, timeout: float = 15.0) -> None:
        self.wait(lambda: needle in self.output, repr(needle), timeout)

    def type(self, text: str) -> None:
        self.ws.send(json.dumps({"type": "input", "data": text}))

    def exit_message(self, timeout: float = 15.0) -> dict[str, Any]:
        self.wait(lambda: any(m["type"] == "exit" for m in self.messages), "the exit frame", timeout)
        return next(m for m in self.messages if m["type"] == "exit")


def drain(term: Terminal) -> None:
    """Read until the server closes the connection (ConnectionClosed)."""
    while True:
        term.ws.recv(timeout=10)


def ws_url(server: Server, process_id: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/v1/processes/{process_id}/terminal/ws{query}"


@contextlib.contextmanager
def attach(server: Server, process_id: str, query: str = "", **kwargs: Any) -> Iterator[Terminal]:
    headers = kwargs.pop("additional_headers", server.headers)
    with connect(ws_url(server, process_id, query), additional_headers=headers, **kwargs) as ws:
        yield Terminal(ws)


def refused(server: Server, process_id: str, query: str = "") -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught, connect(ws_url(server, process_id, query)):
        pass
    return caught.value


def send_input(client: httpx.Client, process_id: str, data: bytes, **extra: Any) -> httpx.Response:
    body = {"data": base64.b64encode(data).decode(), **extra}
    return client.post(f"/v1/processes/{process_id}/input", json=body)


@pytest.fixture
def client(checked_shared_server: Server) -> Any:
    with checked_shared_server.client() as c:
        yield c


def test_bash_on_a_terminal(checked_shared_server: Server, client: httpx.Client) -> None:
    process = start(client, BASH)
    with attach(checked_shared_server, process["id"], "?replay=65536") as term:
        term.read_until(b"$ ")
        term.type("echo $((6*7)); echo TERM=$TERM\n")
        term.read_until(b"42\r\n")
        term.read_until(b"TERM=xterm-256color")
        assert b"[20" not in term.output  # terminal bytes, no timestamps

        term.type("stty size\n")
        term.read_until(b"24 80")
        response = client.post(f"/v1/processes/{process['id']}/terminal/resize", json={"cols": 120, "rows": 40})
        assert response.status_code == 200, response.text
        assert response.json() == {"cols": 120, "rows": 40}
        term.type("stty size\n")
        term.read_until(b"40 120")
        term.ws.send(json.dumps({"type": "resize", "cols": 100, "rows": 33}))
        term.type("stty size\n")
        term.read_until(b"33 100")

        # ^C reaches the foreground job (sleep), not just the shell's input. The job says
        # when it runs: a ^C typed before bash hands it the terminal would reach bash.
        term.type("sh -c 'echo started-$((2+3)); exec sleep 100'\n")
        term.read_until(b"started-5")
        term.type("\x03")
        term.type("echo after-$((3+4))\n")
        term.read_until(b"after-7", timeout=10)

        term.type("exit 7\n")
        assert term.exit_message() == {"type": "exit", "exitCode": 7}
        with pytest.raises(ConnectionClosed):
            term.ws.recv(timeout=10)
    assert wait_exited(client, process["id"])["exitCode"] == 7
    # The old dialect's logs show the terminal's output as stdout lines.
    stdout = client.get(f"/v1/process/{process['id']}/logs", params={"stream": "stdout"}).json()["content"]
    assert "42\n" in stdout


def test_a_full_screen_program(checked_shared_server: Server, client: httpx.Client) -> None:
    code = (
        "import curses\n"
        "def main(screen):\n"
        "    rows, cols = screen.getmaxyx()\n"
        "    screen.addstr(rows // 2, 2, f'CURSES {cols}x{rows}')\n"
        "    screen.refresh()\n"
        "    return screen.getkey()\n"
        "key = curses.wrapper(main)\n"
        "print('pressed', key)\n"
    )
    process = start(client, {**py(code), "tty": True, "terminalSize": {"cols": 90, "rows": 30}})
    with attach(checked_shared_server, process["id"], "?replay=65536") as term:
        term.read_until(b"CURSES 90x30")
        assert b"\x1b[?1049h" in term.output  # the alternate screen
        term.type("q")
        term.read_until(b"pressed q")
        assert b"\x1b[?1049l" in term.output
        assert term.exit_message()["exitCode"] == 0


def test_a_megabyte_paste_arrives_whole(checked_shared_server: Server, client: httpx.Client) -> None:
    size = 1024 * 1024
    payload = bytes((i * 7 + i // 251) % 256 for i in range(size))
    script = f"stty raw -echo; echo READY; head -c {size} | sha256sum"
    process = start(client, {"command": "bash", "args": ["-c", script], "tty": True})
    with attach(checked_shared_server, process["id"], "?replay=4096") as term:
        term.read_until(b"READY")
        for i in range(0, size, 65536):
            response = send_input(client, process["id"], payload[i : i + 65536])
            assert response.status_code == 200, response.text
            assert response.json() == {"bytesWritten": 65536}
        term.read_until(hashlib.sha256(payload).hexdigest().encode(), timeout=30)
        assert term.exit_message()["exitCode"] == 0


def test_two_clients_see_the_same_terminal(checked_shared_server: Server, client: httpx.Client) -> None:
    process = start(client, BASH)
    with (
        attach(checked_shared_server, process["id"], "?replay=4096") as first,
        attach(checked_shared_server, process["id"]) as second,
    ):
        first.read_until(b"$ ")
        first.type("echo from-$((1+1))-first\n")
        second.type("echo from-$((2+2))-second\n")
        for term in (first, second):
            term.read_until(b"from-2-first")
            term.read_until(b"from-4-second")
        # A client that leaves leaves the process running.
        second.ws.send(json.dumps({"type": "close"}))
        with pytest.raises(ConnectionClosed):
            drain(second)
        first.type("echo still-$((5*5))\n")
        first.read_until(b"still-25")
        first.type("exit\n")
        assert first.exit_message()["exitCode"] == 0


def test_replay_is_the_raw_tail(checked_shared_server: Server, client: httpx.Client) -> None:
    """Byte for byte, escape sequences and a UTF-8 character split across two chunks."""
    code = "import os, time; os.write(1, b'caf\\xc3'); time.sleep(0.3); os.write(1, b'\\xa9 \\x1b[1mbold\\x1b[0m\\n')"
    process = start(client, {**py(code), "tty": True})
    wait_exited(client, process["id"])
    with attach(checked_shared_server, process["id"], "?replay=100") as term:
        term.read_until("café \x1b[1mbold\x1b[0m\r\n".encode())
        assert term.exit_message()["exitCode"] == 0


def test_the_terminal_survives_a_server_crash(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    with server.client() as client:
        process = start(client, BASH)
    with attach(server, process["id"], "?replay=4096") as term:
        term.read_until(b"$ ")
        term.type("echo one-$((0+1))\n")
        term.read_until(b"one-1")
        server.crash()
        with pytest.raises(ConnectionClosed):
            drain(term)
    # While no server is up, the supervisor keeps the terminal: the shell still runs.
    server.start()
    with server.client() as client:
        assert client.get(f"/v1/process/{process['id']}").json()["status"] == "running"
        with attach(server, process["id"], "?replay=4096") as again:
            again.read_until(b"one-1")  # replayed
            again.type("echo two-$((1+1))\n")
            again.read_until(b"two-2")
            response = send_input(client, process["id"], b"exit 3\n")
            assert response.status_code == 200
            assert again.exit_message() == {"type": "exit", "exitCode": 3}
        assert wait_exited(client, process["id"])["exitCode"] == 3


def test_interactive_stdin(client: httpx.Client) -> None:
    cat = start(client, {"command": "cat", "interactive": True})
    response = client.post(f"/v1/processes/{cat['id']}/input", json={"data": "hello cat\n", "encoding": "utf8"})
    assert response.json() == {"bytesWritten": 10}
    wait_log(client, cat["id"], "hello cat", stream="stdout")
    assert client.post(f"/v1/process/{cat['id']}/kill").status_code == 204
    wait_exited(client, cat["id"])

    wc = start(client, {"command": "wc", "args": ["-l"], "interactive": True})
    response = send_input(client, wc["id"], b"a\nb\nc\n", eof=True)
    assert response.json() == {"bytesWritten": 6}
    assert wait_exited(client, wc["id"])["exitCode"] == 0
    content = client.get(f"/v1/process/{wc['id']}/logs", params={"strip_timestamps": True}).json()["content"]
    assert content == "[stdout] 3\n"
    # Once exited it takes no input.
    response = send_input(client, wc["id"], b"more\n")
    assert response.status_code == 409
    assert "not running" in response.json()["detail"]


def test_input_and_resize_errors(checked_shared_server: Server, client: httpx.Client) -> None:
    plain = start(client, py("import time; time.sleep(60)"))
    try:
        response = send_input(client, plain["id"], b"x")
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert "interactive" in response.json()["detail"]
        resize = client.post(f"/v1/processes/{plain['id']}/terminal/resize", json={"cols": 80, "rows": 24})
        assert resize.status_code == 409
        error = refused(checked_shared_server, plain["id"])
        assert error.response.status_code == 409
        assert b"tty" in error.response.body
    finally:
        client.post(f"/v1/process/{plain['id']}/kill")
    wait_exited(client, plain["id"])

    assert send_input(client, UNKNOWN_ID, b"x").status_code == 404
    resize = client.post(f"/v1/processes/{UNKNOWN_ID}/terminal/resize", json={"cols": 80, "rows": 24})
    assert resize.status_code == 404
    assert refused(checked_shared_server, UNKNOWN_ID).response.status_code == 404

    cat = start(client, {"command": "cat", "interactive": True})
    try:
        too_big = send_input(client, cat["id"], b"x" * 65537)
        assert too_big.status_code == 413, too_big.text
        assert send_input(client, cat["id"], b"x" * 65536).json() == {"bytesWritten": 65536}
        bad = client.post(f"/v1/processes/{cat['id']}/input", json={"data": "x", "encoding": "hex"})
        assert bad.status_code == 400
        bad = client.post(f"/v1/processes/{cat['id']}/input", json={"data": "!!"})
        assert bad.status_code == 400
        assert "base64" in bad.json()["detail"]
    finally:
        client.post(f"/v1/process/{cat['id']}/kill")
    wait_exited(client, cat["id"])

    shell = start(client, {"command": "sh", "args": ["-c", "exit 0"], "tty": True})
    wait_exited(client, shell["id"])
    resize = client.post(f"/v1/processes/{shell['id']}/terminal/resize", json={"cols": 80, "rows": 24})
    assert resize.status_code == 409


def test_bad_websocket_frames_get_error_frames(checked_shared_server: Server, client: httpx.Client) -> None:
    process = start(client, {"command": "cat", "tty": True})
    try:
        with attach(checked_shared_server, process["id"]) as term:
            for frame in ("not json", '{"type": "bogus"}', '{"type": "input"}', '{"type": "resize", "cols": -1}'):
                term.ws.send(frame)
            term.ws.send(b"binary")
            term.wait(lambda: len(term.messages) >= 6, "five error frames")
            errors = [m for m in term.messages if m["type"] == "error"]
            assert len(errors) == 5, term.messages
            assert "binary" in errors[-1]["message"]
            term.type("still works\n")
            term.read_until(b"still works")
    finally:
        client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])


def test_websocket_auth(server_factory: Callable[..., Server]) -> None:
    server = server_factory(token="s3cret")
    with server.client() as client:
        process = start(client, {"command": "cat", "tty": True})
        try:
            assert refused(server, process["id"]).response.status_code == 401
            assert refused(server, process["id"], "?access_token=wrong").response.status_code == 401
            variants: list[dict[str, Any]] = [
                {"additional_headers": {"Authorization": "Bearer s3cret"}},
                {"additional_headers": {}, "subprotocols": ["bearer.s3cret"]},
                {"query": "?access_token=s3cret", "additional_headers": {}},
            ]
            for n, variant in enumerate(variants):
                with attach(server, process["id"], variant.pop("query", ""), **variant) as term:
                    term.type(f"variant-{n}\n")
                    term.read_until(f"variant-{n}".encode())
            # The query token is for the terminal WebSocket only.
            response = httpx.get(f"{server.url}/v1/process", params={"access_token": "s3cret"})
            assert response.status_code == 401
        finally:
            client.post(f"/v1/process/{process['id']}/kill")
        wait_exited(client, process["id"])


def test_a_cross_origin_page_cannot_attach(checked_shared_server: Server, client: httpx.Client) -> None:
    process = start(client, {"command": "cat", "tty": True})
    try:
        with (
            pytest.raises(InvalidStatus) as caught,
            connect(ws_url(checked_shared_server, process["id"]), origin="http://evil.example"),
        ):
            pass
        assert caught.value.response.status_code == 403
    finally:
        client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])


def test_tty_env_term_can_be_overridden(client: httpx.Client) -> None:
    process = start(client, {"command": "sh", "args": ["-c", "echo T=$TERM"], "env": {"TERM": "vt100"}, "tty": True})
    wait_exited(client, process["id"])
    assert "T=vt100" in client.get(f"/v1/process/{process['id']}/logs").json()["content"]


def test_the_control_fifo_is_private(client: httpx.Client) -> None:
    process = start(client, {"command": "cat", "interactive": True})
    try:
        fifo = os.path.join(os.path.dirname(process["logPaths"]["stdout"]), "control.fifo")
        mode = os.stat(fifo).st_mode
        assert stat.S_ISFIFO(mode)
        assert stat.S_IMODE(mode) == 0o600
    finally:
        client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])


def test_input_to_a_closed_stdin_is_dropped_without_spinning(client: httpx.Client, tmp_path: Any) -> None:
    """The supervisor sees the broken pipe once, not in a busy loop."""
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "os.close(0)\n"
        "print('closed', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "def cpu():\n"
        "    fields = open(f'/proc/{os.getppid()}/stat').read().rsplit(')', 1)[1].split()\n"
        "    return int(fields[11]) + int(fields[12])\n"
        "start = cpu(); time.sleep(0.5); print('ticks', cpu() - start, flush=True)\n"
    )
    process = start(client, {**py(code), "interactive": True})
    wait_log(client, process["id"], "closed")
    assert send_input(client, process["id"], b"nobody reads this\n").status_code == 200
    # The supervisor saw the broken pipe and recorded it: more input is refused.
    refusal = wait_for(
        lambda: (r := send_input(client, process["id"], b"more\n")).status_code == 409 and r,
        10,
        "input to be refused once stdin is known closed",
    )
    assert "closed" in refusal.json()["detail"]
    go.touch()
    assert wait_exited(client, process["id"])["exitCode"] == 0
    content = client.get(f"/v1/process/{process['id']}/logs", params={"stream": "stdout"}).json()["content"]
    ticks = int(content.split("ticks ")[1].split()[0])
    assert ticks < 20, content


def test_a_graceful_restart_ends_attached_terminals_at_once(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    with server.client() as client:
        process = start(client, {"command": "cat", "tty": True})
    with attach(server, process["id"]) as term:
        began = time.monotonic()
        server.stop()
        stopping = time.monotonic() - began
        with pytest.raises(ConnectionClosed) as closed:
            drain(term)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
    # Below uvicorn's 5 s graceful timeout: the WebSocket did not hold the shutdown.
    assert stopping < 4
    server.start()
    with server.client() as client:
        with attach(server, process["id"]) as term:
            term.type("after restart\n")
            term.read_until(b"after restart")
        client.post(f"/v1/process/{process['id']}/kill")
        wait_exited(client, process["id"])


def test_refusals_speak_the_processes_dialect(checked_shared_server: Server, client: httpx.Client) -> None:
    """Found by the differential tests: a refused WebSocket, an input without data and a plain
    GET of the WebSocket's path answer as the original does (status, problem type)."""
    denied = refused(checked_shared_server, UNKNOWN_ID).response
    assert denied.status_code == 404
    assert json.loads(denied.body)["type"] == "urn:sandbox-agent:error:not_found"
    plain = start(client, {"command": "cat", "interactive": True})
    try:
        denied = refused(checked_shared_server, plain["id"]).response
        assert denied.status_code == 409
        assert json.loads(denied.body)["type"] == "urn:sandbox-agent:error:conflict"
        response = client.post(f"/v1/processes/{plain['id']}/input", json={})
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "urn:sandbox-agent:error:invalid_request"
        for process_id in (plain["id"], UNKNOWN_ID):
            response = client.get(f"/v1/processes/{process_id}/terminal/ws")
            assert response.status_code == 400, response.text
            assert "WebSocket" in response.json()["detail"]
    finally:
        client.post(f"/v1/process/{plain['id']}/kill")
    wait_exited(client, plain["id"])


def test_a_size_must_be_a_whole_number(client: httpx.Client) -> None:
    """Found by the differential tests: "80", 80.0 and true were taken as sizes; the original's
    u16 refuses them with a 422, and so do we now."""
    process = start(client, {"command": "cat", "tty": True})
    try:
        for cols in ("80", 80.0, True):
            response = client.post(f"/v1/processes/{process['id']}/terminal/resize", json={"cols": cols, "rows": 24})
            assert response.status_code == 422, (cols, response.text)
            assert response.json()["type"] == "urn:sandbox-agent:error:invalid_request"
        response = client.post(f"/v1/processes/{process['id']}/terminal/resize", json={"cols": 81, "rows": 25})
        assert response.json() == {"cols": 81, "rows": 25}
    finally:
        client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])

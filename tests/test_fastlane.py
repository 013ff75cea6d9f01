"""The fast lane (server/fastlane.py) answers a plain GET of a process exactly as the routes do.

A query string the routes ignore (``?via=routes``) sends the same request through FastAPI,
so the two answers can be set side by side.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, py, start, wait_exited, wait_for, wait_log


def both(client: httpx.Client, path: str) -> tuple[httpx.Response, httpx.Response]:
    return client.get(path), client.get(path, params={"via": "routes"})


def assert_same(client: httpx.Client, path: str) -> None:
    fast, routed = both(client, path)
    assert fast.status_code == routed.status_code
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.content == routed.content, path


def test_a_process_reads_the_same_through_the_fast_lane(checked_shared_server: Server) -> None:
    with checked_shared_server.client() as client:
        running = start(client, {**py("import time\nprint('ready', flush=True)\ntime.sleep(60)"), "name": "lane"})
        wait_log(client, running["id"], "ready")
        done = start(client, py("raise SystemExit(4)"))
        wait_exited(client, done["id"])
        for key in (running["id"], "lane", done["id"]):
            assert_same(client, f"/v1/process/{key}")
            assert_same(client, f"/v1/processes/{key}")
        assert client.get("/v1/processes/lane").json()["id"] == running["id"]
        # What the lane does not know goes on to the routes: their problems, their config.
        for path in ("/v1/process/no-such-process", "/v1/processes/no-such-process", "/v1/processes/config"):
            assert_same(client, path)
        assert client.get("/v1/processes/no-such-process").headers["content-type"] == "application/problem+json"
        client.post(f"/v1/process/{running['id']}/kill")
        wait_exited(client, running["id"])
        assert_same(client, f"/v1/processes/{running['id']}")


#: What the lane answers itself, each a request it would take: (method, path, body).
_LANE_REQUESTS = [
    ("POST", "/v1/process", {"command": "touch", "args": ["MARK"]}),
    ("POST", "/v1/processes", {"command": "touch", "args": ["MARK"]}),
    ("POST", "/v1/processes/run", {"command": "touch", "args": ["MARK"]}),
    ("GET", "/v1/process/ID", None),
    ("GET", "/v1/processes/ID", None),
]


def _lane_request(
    server: Server, method: str, path: str, body: Any, mark: Path, process_id: str, **headers: str
) -> httpx.Response:
    if body is not None:
        body = {**body, "args": [str(mark)]}
    return httpx.request(method, f"{server.url}{path.replace('ID', process_id)}", json=body, headers=headers)


def test_the_fast_lane_is_behind_the_token(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    """The lane is in front of the whole stack: it must refuse what the token check refuses
    (the stack's 401 answers it), for every request it takes, and start nothing."""
    server = server_factory(token="s3cret")
    with server.client() as client:
        process = start(client, py("pass"))
        wait_exited(client, process["id"])
    refused_mark = tmp_path / "refused-ran"
    for i, (method, path, body) in enumerate(_LANE_REQUESTS):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
            refused = _lane_request(server, method, path, body, refused_mark, process["id"], **headers)
            assert refused.status_code == 401, (method, path, headers, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["www-authenticate"] == 'Bearer realm="sandbox-agent"'
        allowed_mark = tmp_path / f"allowed-{i}"
        allowed = _lane_request(server, method, path, body, allowed_mark, process["id"], Authorization="Bearer s3cret")
        assert allowed.status_code in (200, 201), (method, path, allowed.text)
        if body is not None:
            # The allowed start has run by now: a refused one would have too.
            wait_for(allowed_mark.exists, 10, f"{path} with the token to run")
    with server.client() as client:
        for p in client.get("/v1/processes").json()["processes"]:
            wait_exited(client, p["id"])
    assert not refused_mark.exists()


def test_the_fast_lane_is_behind_the_browser_guard(server: Server, tmp_path: Path) -> None:
    """Without a token, a rebinding name is refused with or without an Origin (a same-origin
    GET carries none), and a foreign Origin is refused: by the stack, for every request
    the lane takes, with nothing started."""
    with server.client() as client:
        process = start(client, py("pass"))
        wait_exited(client, process["id"])
        before = client.get("/v1/processes").json()["processes"]
    mark = tmp_path / "ran"
    rebound = f"evil.test:{server.port}"
    for method, path, body in _LANE_REQUESTS:
        for headers in (
            {"Host": rebound},
            {"Host": rebound, "Origin": f"http://{rebound}"},
            {"Origin": "http://evil.test"},
        ):
            refused = _lane_request(server, method, path, body, mark, process["id"], **headers)
            assert refused.status_code == 403, (method, path, headers, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
    assert not mark.exists()
    with server.client() as client:
        assert client.get("/v1/processes").json()["processes"] == before


def _comparable(process: dict[str, Any]) -> dict[str, Any]:
    """A process without what differs from one start to the next (its log paths hold its id)."""
    different = ("id", "pid", "createdAtMs", "startedAt")
    same = {k: v for k, v in process.items() if k not in different}
    if "logPaths" in same:
        same["logPaths"] = {k: v.replace(process["id"], "ID") for k, v in same["logPaths"].items()}
    return same


def test_plain_starts_and_runs_answer_as_the_routes_do(checked_shared_server: Server, tmp_path: Path) -> None:
    """A start or run the lane takes (``command``, ``args``, ``cwd``, ``env``) answers as the
    route does: same status, headers that matter and fields; ``?via=routes`` sends the same
    request through FastAPI."""
    body = {**py("import os; print(os.environ['LANE'])"), "cwd": str(tmp_path), "env": {"LANE": "yes"}}
    with checked_shared_server.client() as client:
        for path in ("/v1/process", "/v1/processes"):
            fast = client.post(path, json=body)
            routed = client.post(path, json=body, params={"via": "routes"})
            assert fast.status_code == routed.status_code == (201 if path == "/v1/process" else 200)
            assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
            assert _comparable(fast.json()) == _comparable(routed.json())
            if path == "/v1/process":
                assert fast.headers["location"] == f"/v1/process/{fast.json()['id']}"
                assert routed.headers["location"] == f"/v1/process/{routed.json()['id']}"
            for process in (fast.json(), routed.json()):
                wait_exited(client, process["id"])
                assert wait_log(client, process["id"], "yes").endswith("yes\n")
        run = {**py("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"), "timeoutMs": 10000}
        fast = client.post("/v1/processes/run", json=run)
        routed = client.post("/v1/processes/run", json=run, params={"via": "routes"})
        assert fast.status_code == routed.status_code == 200
        assert (
            {k: v for k, v in fast.json().items() if k != "durationMs"}
            == {k: v for k, v in routed.json().items() if k != "durationMs"}
            == {
                "exitCode": 3,
                "timedOut": False,
                "stdout": "out\n",
                "stderr": "err\n",
                "stdoutTruncated": False,
                "stderrTruncated": False,
            }
        )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Errors the engine finds: the lane renders them as the routes do, per dialect.
        ("/v1/process", {"command": "no-such-program-xyz"}),
        ("/v1/processes", {"command": "no-such-program-xyz"}),
        ("/v1/processes", {"command": "true", "cwd": "/no/such/dir"}),
        ("/v1/process", {"command": "true", "env": {"A=B": "x"}}),
        ("/v1/processes/run", {"command": "true", "args": ["a\u0000b"]}),
        ("/v1/processes/run", {"command": "  "}),
        # Bodies the lane leaves to the routes: a wrong type, a field it does not take.
        ("/v1/process", {"command": 5}),
        ("/v1/processes", {"command": "true", "args": "-l"}),
        ("/v1/processes", {"command": "true", "env": None}),
        ("/v1/processes/run", {"command": "true", "timeoutMs": -1}),
        ("/v1/processes/run", {"command": "true", "timeoutMs": 1.5}),
        ("/v1/processes", ["true"]),
    ],
)
def test_bad_starts_get_the_routes_problem(checked_shared_server: Server, path: str, body: Any) -> None:
    with checked_shared_server.client() as client:
        fast = client.post(path, json=body)
        routed = client.post(path, json=body, params={"via": "routes"})
    assert fast.status_code == routed.status_code
    assert fast.status_code in (400, 422)
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/problem+json"
    assert fast.content == routed.content


def test_a_start_that_is_not_json_or_too_big_for_the_lane_still_works(checked_shared_server: Server) -> None:
    with checked_shared_server.client() as client:
        not_json = client.post(
            "/v1/processes", content=b'{"command": "true",', headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        assert "not valid JSON" in not_json.json()["detail"]
        # An environment over the lane's 64 KiB: the routes take it.
        big = client.post("/v1/processes", json={"command": "true", "env": {"BIG": "x" * 100_000}})
        assert big.status_code == 200, big.text
        wait_exited(client, big.json()["id"])


# The lane's answers are written at the connection itself (server/wire.py): the connection
# must go on as uvicorn's own would, whatever the client does around them.


def _read_answer(sock: socket.socket, buffer: bytearray) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One answer from ``sock`` (status line, lower-cased headers, body); ``buffer`` keeps
    what came after it."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection before answering"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in the middle of an answer"
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def _request(method: str, path: str, body: bytes = b"", *extra: str, version: str = "1.1") -> bytes:
    head = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _closed(sock: socket.socket) -> bool:
    """The server has closed ``sock`` (it reads end of file, within a deadline)."""
    sock.settimeout(10)
    return sock.recv(1) == b""


def test_lane_answers_keep_the_connection_going(checked_shared_server: Server) -> None:
    """Pipelined requests, lane's and stack's mixed, are answered in order on one connection;
    a ``Connection: close`` or HTTP/1.0 request gets ``connection: close`` and the close."""
    with checked_shared_server.client() as client:
        process = start(client, py("pass"))
        wait_exited(client, process["id"])
    get = _request("GET", f"/v1/processes/{process['id']}")
    run = _request("POST", "/v1/processes/run", json.dumps({"command": "echo", "args": ["piped"]}).encode())
    routed = _request("GET", f"/v1/processes/{process['id']}?via=routes")
    with socket.create_connection(("127.0.0.1", checked_shared_server.port), timeout=10) as sock:
        buffer = bytearray()
        sock.sendall(get + run + get + routed + get)
        answers = [_read_answer(sock, buffer) for _ in range(5)]
        assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 5
        for index in (0, 2, 3, 4):
            assert json.loads(answers[index][2])["id"] == process["id"]
        assert answers[0][2] == answers[3][2]  # the lane's bytes are the routes'
        assert json.loads(answers[1][2])["stdout"] == "piped\n"
        for _, headers, body in answers:
            assert headers[b"content-type"] == b"application/json"
            assert int(headers[b"content-length"]) == len(body)
            assert b"connection" not in headers
            assert b"date" in headers
        sock.sendall(_request("GET", f"/v1/processes/{process['id']}", b"", "Connection: close"))
        status, headers, _ = _read_answer(sock, buffer)
        assert (status, headers[b"connection"]) == (b"HTTP/1.1 200 OK", b"close")
        assert _closed(sock)
    with socket.create_connection(("127.0.0.1", checked_shared_server.port), timeout=10) as sock:
        sock.sendall(_request("GET", f"/v1/processes/{process['id']}", version="1.0"))
        status, headers, body = _read_answer(sock, bytearray())
        assert headers[b"connection"] == b"close"
        assert json.loads(body)["id"] == process["id"]
        assert _closed(sock)


def test_lane_posts_wait_for_their_body(checked_shared_server: Server, tmp_path: Path) -> None:
    """A start sent in pieces, or with ``Expect: 100-continue``, is taken once its body is
    whole; a client gone before its body is whole starts nothing, and the server goes on."""
    mark = tmp_path / "started"
    body = json.dumps({"command": "touch", "args": [str(mark)]}).encode()
    port = checked_shared_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request("POST", "/v1/processes/run", body)[: -len(body) // 2])
        sock.sendall(body[-len(body) // 2 :])
        status, _, answer = _read_answer(sock, bytearray())
        assert (status, json.loads(answer)["exitCode"]) == (b"HTTP/1.1 200 OK", 0)
    assert mark.exists()
    mark.unlink()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buffer = bytearray()
        sock.sendall(
            _request("POST", "/v1/processes/run", b"", "Expect: 100-continue")[:-2].replace(
                b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
            )
            + b"\r\n"
        )
        status, _, _ = _read_answer(sock, buffer)
        assert status == b"HTTP/1.1 100 Continue"
        sock.sendall(body)
        status, _, answer = _read_answer(sock, buffer)
        assert (status, json.loads(answer)["exitCode"]) == (b"HTTP/1.1 200 OK", 0)
    assert mark.exists()
    mark.unlink()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request("POST", "/v1/processes", body)[:-5])
    with checked_shared_server.client() as client:
        wait_for(lambda: client.get("/v1/health").status_code == 200, 10, "the server to answer")
        assert client.post("/v1/processes/run", json={"command": "true"}).json()["exitCode"] == 0
        assert not any(p["args"] == [str(mark)] for p in client.get("/v1/processes").json()["processes"])
    assert not mark.exists()


def test_with_the_access_log_on_every_request_is_logged(server_factory: Callable[..., Server]) -> None:
    """The access log is uvicorn's: with it on, the lane's requests go through uvicorn's
    cycle (and the lane's ASGI application), so each is in the log."""
    server = server_factory(extra_args=["--access-log"])
    with server.client() as client:
        process = client.post("/v1/processes", json={"command": "true"}).json()
        wait_for(lambda: client.get(f"/v1/processes/{process['id']}").json()["status"] == "exited", 10, "the exit")
        assert client.post("/v1/processes/run", json={"command": "true"}).json()["exitCode"] == 0
    log = wait_for(
        lambda: (text := server.log_path.read_text()).count(f"GET /v1/processes/{process['id']} HTTP/1.1") and text,
        10,
        "the access log's lines",
    )
    assert '"POST /v1/processes HTTP/1.1" 200' in log
    assert '"POST /v1/processes/run HTTP/1.1" 200' in log


@pytest.mark.slow
def test_a_request_pipelined_behind_a_lane_answer_outlives_the_keep_alive_timeout(
    checked_shared_server: Server,
) -> None:
    """A lane GET answered at once arms uvicorn's keep-alive timeout (5 s) while the run
    sent behind it in the same write is still to come: the run must still get its answer
    after longer than that, and the connection must still close once it is idle."""
    with checked_shared_server.client() as client:
        process = start(client, py("pass"))
        wait_exited(client, process["id"])
    run = _request("POST", "/v1/processes/run", json.dumps({"command": "sleep", "args": ["5.5"]}).encode())
    with socket.create_connection(("127.0.0.1", checked_shared_server.port), timeout=20) as sock:
        buffer = bytearray()
        sock.sendall(_request("GET", f"/v1/processes/{process['id']}") + run)
        status, _, body = _read_answer(sock, buffer)
        assert (status, json.loads(body)["id"]) == (b"HTTP/1.1 200 OK", process["id"])
        status, _, body = _read_answer(sock, buffer)
        assert (status, json.loads(body)["exitCode"]) == (b"HTTP/1.1 200 OK", 0)
        assert _closed(sock)  # the keep-alive timeout, once the connection is idle

"""Services (SPEC section 8): names, labels, readiness, ports and usage, wait, events.

Real servers: ``python3 -m http.server`` on a free port, and small Python programs that
print "ready" only once they are told to (a line on stdin), so no test sleeps.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Server, free_port, py, start, wait_exited, wait_for

#: Prints "booting", then "server ready" once a line arrives on stdin, then waits for another.
READY_ON_INPUT = "import sys\nprint('booting')\nsys.stdin.readline()\nprint('server ready')\nsys.stdin.readline()"
DIALECTS = ("/v1/process", "/v1/processes")


def http_server(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": ["-m", "http.server", str(port), "--bind", "127.0.0.1"],
        **extra,
    }


def create(client: httpx.Client, dialect: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(dialect, json=body)
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()
    return data


def send_line(client: httpx.Client, process: str, text: str = "go\n") -> None:
    response = client.post(f"/v1/processes/{process}/input", json={"data": text, "encoding": "utf8"})
    assert response.status_code == 200, response.text


def finish(client: httpx.Client, process: str) -> None:
    client.post(f"/v1/processes/{process}/kill")
    assert client.delete(f"/v1/processes/{process}").status_code == 204


@pytest.fixture
def c(checked_shared_server: Server) -> Iterator[httpx.Client]:
    with checked_shared_server.client() as client:
        yield client


# -- readiness -------------------------------------------------------------------------


def test_wait_for_port_and_http_get_then_ports_and_usage(c: httpx.Client) -> None:
    port = free_port()
    body = http_server(port, name="web", waitFor={"port": port, "httpGet": f"http://127.0.0.1:{port}/"})
    process = start(c, body)
    assert process["status"] == "running"
    assert (process["name"], process["ready"], process["restarts"]) == ("web", True, 0)
    # It answers at once: the start returned only once it did.
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200

    sampled = wait_for(lambda: (p := c.get("/v1/process/web").json()).get("ports") and p, what="a sample")
    assert sampled["ports"] == [port]
    assert sampled["usage"]["rssBytes"] > 1_000_000
    assert 0 <= sampled["usage"]["cpuPercent"] <= 100 * 64
    info = c.get("/v1/processes/web").json()
    assert info["ports"] == [port]
    assert set(info["usage"]) == {"cpuPercent", "rssBytes"}

    assert c.post("/v1/process/web/stop").status_code == 204
    stopped = c.get("/v1/process/web/wait", params={"until": "exit"}).json()
    assert stopped["status"] == "stopped"
    assert stopped["id"] == process["id"]
    # No sample once exited.
    assert "ports" not in stopped
    assert "usage" not in stopped
    assert c.delete("/v1/process/web").status_code == 204
    assert c.get("/v1/process/web").status_code == 404


def test_wait_for_log_pattern_answers_once_the_line_is_there(c: httpx.Client) -> None:
    # Ready at once: the start answers with ready true.
    body = py("import sys\nprint('listening on 8080', file=sys.stderr)\nsys.stdin.readline()")
    body.update(interactive=True, name="api", waitFor={"logPattern": r"listening on \d+$"})
    process = create(c, "/v1/processes", body)
    assert process["ready"] is True
    assert process["status"] == "running"
    finish(c, "api")


def test_wait_until_ready_for_a_start_that_did_not_wait(c: httpx.Client) -> None:
    body = py(READY_ON_INPUT)
    body.update(interactive=True, name="later", waitFor={"logPattern": "ready$", "timeoutMs": 0})
    process = create(c, "/v1/processes", body)
    assert process["ready"] is False
    # Not ready yet: the wait answers with the process as it is when the time is up.
    early = c.get("/v1/processes/later/wait", params={"until": "ready", "timeoutMs": 50}).json()
    assert (early["status"], early["ready"]) == ("running", False)
    send_line(c, "later")
    ready = c.get("/v1/process/later/wait", params={"until": "ready", "timeoutMs": 30000}).json()
    assert (ready["status"], ready["ready"]) == ("running", True)
    assert c.get("/v1/processes", params={"name": "later"}).json()["processes"][0]["ready"] is True
    finish(c, "later")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_wait_for_timeout_is_504_and_leaves_the_process_running(c: httpx.Client, dialect: str) -> None:
    body = py(READY_ON_INPUT)
    body.update(interactive=True, name="slow", waitFor={"logPattern": "ready$", "timeoutMs": 200})
    response = c.post(dialect, json=body)
    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert "left running" in problem["detail"]
    assert "slow" in problem["detail"]
    if dialect == "/v1/processes":
        assert problem["type"] == "urn:sandbox-agent:error:timeout"
    process = c.get(f"{dialect}/slow").json()
    assert (process["status"], process["ready"]) == ("running", False)
    # The watch goes on after the start gave up.
    send_line(c, "slow")
    ready = c.get(f"{dialect}/slow/wait", params={"until": "ready"}).json()
    assert ready["ready"] is True
    finish(c, "slow")


def test_a_process_that_exits_before_it_is_ready_answers_the_start_at_once(c: httpx.Client) -> None:
    body = py("print('bye')")
    body.update(name="quitter", waitFor={"port": free_port(), "timeoutMs": 60000})
    process = start(c, body)
    assert process["ready"] is False
    assert process["status"] == "stopped"
    assert process["exitCode"] == 0
    assert c.get("/v1/process/quitter/wait", params={"until": "ready"}).json()["ready"] is False
    assert c.delete("/v1/process/quitter").status_code == 204


@pytest.mark.parametrize(
    ("wait_for", "words"),
    [
        ({}, "at least one of port"),
        ({"port": 0}, "not a TCP port"),
        ({"port": 70000}, "not a TCP port"),
        ({"logPattern": "("}, "not a regular expression"),
        ({"logPattern": "x" * 513}, "1 to 512"),
        ({"httpGet": "ftp://host/"}, "http:// or https://"),
        ({"port": 80, "timeoutMs": 300001}, "out of range"),
    ],
)
def test_bad_wait_for_is_a_400(c: httpx.Client, wait_for: dict[str, Any], words: str) -> None:
    for dialect in DIALECTS:
        response = c.post(dialect, json={**py("pass"), "waitFor": wait_for})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert words in response.json()["detail"]


def test_wait_until_ready_without_wait_for_is_a_400(c: httpx.Client) -> None:
    process = start(c, py("print('x')"))
    response = c.get(f"/v1/process/{process['id']}/wait", params={"until": "ready"})
    assert response.status_code == 400
    assert "without waitFor" in response.json()["detail"]
    wait_exited(c, process["id"])
    c.delete(f"/v1/process/{process['id']}")


# -- names and labels ------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_name_works_wherever_an_id_does(c: httpx.Client, dialect: str) -> None:
    body = py("import sys\nprint('hello', flush=True)\nsys.stdin.readline()")
    body.update(interactive=True, name="svc-1.a_b", labels={"team": "web"})
    process = create(c, dialect, body)
    pid = process["id"]
    assert c.get(f"{dialect}/svc-1.a_b").json()["id"] == pid

    def logged() -> bool:
        response = c.get(f"{dialect}/svc-1.a_b/logs")
        assert response.status_code == 200, response.text
        data = response.json()
        if "content" in data:
            return "hello" in data["content"]
        return any(base64.b64decode(entry["data"]) == b"hello\n" for entry in data["entries"])

    wait_for(logged, what="the log read by name")
    clash = c.post(dialect, json={**py("pass"), "name": "svc-1.a_b"})
    assert clash.status_code == 409
    assert pid in clash.json()["detail"]
    assert c.post(f"{dialect}/svc-1.a_b/stop").status_code in (200, 204)
    done = c.get(f"{dialect}/svc-1.a_b/wait", params={"until": "exit"}).json()
    assert done["id"] == pid
    assert done["status"] in ("stopped", "exited")
    assert c.post(f"{dialect}/svc-1.a_b/kill").status_code in (200, 204)

    # Free again once exited; the name then names the newest (the running one).
    again = create(c, dialect, {**py("import sys\nsys.stdin.readline()"), "interactive": True, "name": "svc-1.a_b"})
    assert c.get(f"{dialect}/svc-1.a_b").json()["id"] == again["id"]
    finish(c, "svc-1.a_b")
    # Both exited: the newest of them.
    assert c.get(f"{dialect}/svc-1.a_b").json()["id"] == pid
    assert c.delete(f"{dialect}/svc-1.a_b").status_code == 204
    assert c.get(f"{dialect}/svc-1.a_b").status_code == 404


@pytest.mark.parametrize(
    "name", ["", "Web", "-web", ".", "..", "a" * 65, "a b", "web/x", "config", "run", "01m8j98z4r5heyjr4rv46t8h0s"]
)
def test_bad_names_are_a_400(c: httpx.Client, name: str) -> None:
    for dialect in DIALECTS:
        response = c.post(dialect, json={**py("pass"), "name": name})
        assert response.status_code == 400, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "name" in response.json()["detail"]


@pytest.mark.parametrize(
    "restart",
    [{"policy": "sometimes"}, {"policy": "always", "backoffMs": 1}, {"policy": "always", "maxRestarts": -1}],
)
def test_bad_restart_policies_are_a_400(c: httpx.Client, restart: dict[str, Any]) -> None:
    for dialect in DIALECTS:
        response = c.post(dialect, json={**py("pass"), "restart": restart})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "restart" in response.json()["detail"]


def test_restart_policy_with_a_terminal_is_a_400(c: httpx.Client) -> None:
    response = c.post("/v1/processes", json={**py("pass"), "tty": True, "restart": {"policy": "always"}})
    assert response.status_code == 400
    assert "tty" in response.json()["detail"]


def test_bad_labels_are_a_400(c: httpx.Client) -> None:
    response = c.post("/v1/processes", json={**py("pass"), "labels": {"a=b": "x"}})
    assert response.status_code == 400
    assert "label" in response.json()["detail"]


def test_list_filters(c: httpx.Client) -> None:
    forever = {**py("import sys\nsys.stdin.readline()"), "interactive": True}
    a = create(c, "/v1/processes", {**forever, "name": "fa", "labels": {"app": "shop", "tier": "web"}})
    b = create(c, "/v1/processes", {**forever, "labels": {"app": "shop", "tier": "db"}})
    done = start(c, {**py("pass"), "labels": {"app": "shop"}})
    wait_exited(c, done["id"])

    def ids(dialect: str, **params: Any) -> list[str]:
        response = c.get(dialect, params=params)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["processes"]]

    for dialect in DIALECTS:
        shop = ids(dialect, label="app=shop")
        assert set(shop) == {a["id"], b["id"], done["id"]}
        assert ids(dialect, label=["app=shop", "tier=web"]) == [a["id"]]
        assert set(ids(dialect, label="tier")) == {a["id"], b["id"]}
        assert set(ids(dialect, label="app=shop", status="running")) == {a["id"], b["id"]}
        assert ids(dialect, label="app=shop", status="exited") == [done["id"]]
        assert ids(dialect, name="fa") == [a["id"]]
        assert ids(dialect, name="nobody") == []
    assert ids("/v1/process", label="app=shop", status="stopped") == [done["id"]]
    # Newest first here, oldest first there, as without filters.
    assert ids("/v1/process", label="tier") == [b["id"], a["id"]]
    assert ids("/v1/processes", label="tier") == [a["id"], b["id"]]
    for dialect in DIALECTS:
        bad = c.get(dialect, params={"status": "sleeping"})
        assert bad.status_code == 400
        assert "status must be one of running" in bad.json()["detail"]
    for process in (a, b):
        finish(c, process["id"])
    c.delete(f"/v1/process/{done['id']}")


# -- events --------------------------------------------------------------------------


def _open_events(client: httpx.Client, **kwargs: Any) -> Any:
    return client.stream("GET", "/v1/events", timeout=httpx.Timeout(30, read=30), **kwargs)


def _read(lines: Iterator[str], count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The next ``count`` events as (id, event, data)."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    event_id, kind, data = "", "message", ""
    for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                found.append((event_id, kind, json.loads(data)))
                if len(found) == count:
                    return found
            kind, data = "message", ""
            continue
        name, _, value = line.partition(": ")
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data = value
    raise AssertionError(f"the stream ended after {found}")


def test_events_in_order_and_resumed_with_last_event_id(checked_shared_server: Server) -> None:
    with checked_shared_server.client() as c, _open_events(c) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == ": connected"  # the stream is open: what happens now is sent
        body = py(READY_ON_INPUT)
        body.update(interactive=True, name="evt", waitFor={"logPattern": "ready$", "timeoutMs": 0})
        process = create(c, "/v1/process", body)
        send_line(c, "evt")
        # Ready before it is told to end: a process that exits before its readiness is
        # seen is never ready, and the second line could otherwise win that race.
        ready = c.get("/v1/process/evt/wait", params={"until": "ready", "timeoutMs": 30000}).json()
        assert ready["ready"] is True
        send_line(c, "evt")
        wait_exited(c, "evt")
        assert c.delete("/v1/process/evt").status_code == 204
        events = _read(lines, 4)
    kinds = [kind for _, kind, _ in events]
    assert kinds == ["created", "ready", "exited", "deleted"]
    assert all(data["id"] == process["id"] for _, _, data in events)
    assert [data["status"] for _, _, data in events] == ["running", "running", "stopped", "stopped"]
    assert [data["ready"] for _, _, data in events] == [False, True, True, True]
    ids = [int(event_id) for event_id, _, _ in events]
    assert ids == list(range(ids[0], ids[0] + 4))

    with checked_shared_server.client() as c:
        # Resumed after the second: the two after it, from the history.
        with _open_events(c, headers={"Last-Event-ID": str(ids[1])}, params={"dialect": "processes"}) as response:
            resumed = _read(response.iter_lines(), 2)
        assert [(int(i), kind) for i, kind, _ in resumed] == [(ids[2], "exited"), (ids[3], "deleted")]
        assert resumed[0][2]["status"] == "exited"  # the /v1/processes shape
        # An id the history does not hold (older than it, or from before a restart): a reset.
        with _open_events(c, headers={"Last-Event-ID": "1"}) as response:
            ((reset_id, kind, data),) = _read(response.iter_lines(), 1)
        assert kind == "reset"
        assert int(reset_id) >= ids[3]
        assert "processes" in data
        bad = c.get("/v1/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"


# -- across a restart of the server -----------------------------------------------------


def test_names_labels_and_readiness_survive_a_restart(server: Server) -> None:
    with server.client() as c:
        body = py(READY_ON_INPUT)
        body.update(interactive=True, name="keep", labels={"k": "v"}, waitFor={"logPattern": "ready$", "timeoutMs": 0})
        create(c, "/v1/processes", body)
        ready = {**py("import sys\nprint('ok ready')\nsys.stdin.readline()"), "interactive": True}
        create(c, "/v1/processes", {**ready, "name": "done", "waitFor": {"logPattern": "ready$"}})
    server.restart()
    with server.client() as c:
        kept = c.get("/v1/processes/keep").json()
        assert (kept["name"], kept["labels"], kept["ready"]) == ("keep", {"k": "v"}, False)
        assert c.get("/v1/process/done").json()["ready"] is True
        # Watched again after the restart.
        send_line(c, "keep")
        assert c.get("/v1/processes/keep/wait", params={"until": "ready"}).json()["ready"] is True
        assert [p["name"] for p in c.get("/v1/process", params={"label": "k=v"}).json()["processes"]] == ["keep"]
        finish(c, "keep")
        finish(c, "done")


def test_plain_processes_keep_the_original_shape(c: httpx.Client) -> None:
    process = start(c, py("print('x')"))
    done = wait_exited(c, process["id"])
    for key in ("name", "labels", "restarts", "ready", "ports", "usage"):
        assert key not in done
    c.delete(f"/v1/process/{process['id']}")


# -- the SDK ---------------------------------------------------------------------------


def _now(client: Any) -> str:
    """The id a fresh event stream starts at (its first, bare, ``id:`` line)."""
    http = client if isinstance(client, httpx.Client) else client._http
    with http.stream("GET", "/v1/events") as response:
        lines = response.iter_lines()
        assert next(lines) == ": connected"
        return next(lines).removeprefix("id: ")


def test_sdk_sync(checked_shared_server: Server) -> None:
    import sandbox_agent
    from sandbox_agent import ReadinessTimeout, WaitFor

    port = free_port()
    with sandbox_agent.Client(checked_shared_server.url) as client:
        events = client.events(last_event_id=_now(client))
        web = client.start(
            sys.executable,
            ["-m", "http.server", str(port), "--bind", "127.0.0.1"],
            name="sdk-web",
            labels={"app": "sdk"},
            wait_for=f"port:{port}",
        )
        assert (web.name, web.labels, web.ready, web.restarts) == ("sdk-web", {"app": "sdk"}, True, 0)
        created = next(events)
        assert created.kind == "created"
        assert created.process is not None
        assert created.process.id == web.id
        assert next(events).kind == "ready"
        sampled = wait_for(lambda: (p := client.get("sdk-web")).ports and p, what="a sample")
        assert sampled.ports == [port]
        assert sampled.usage is not None
        assert sampled.usage.rss_bytes > 0
        assert [p.id for p in client.list(status="running", labels={"app": "sdk"})] == [web.id]
        assert [p.id for p in client.processes.list(labels=["app"], name="sdk-web")] == [web.id]

        body = py(READY_ON_INPUT)
        with pytest.raises(ReadinessTimeout, match="left running"):
            client.processes.create(
                body["command"],
                body["args"],
                interactive=True,
                name="sdk-slow",
                wait_for=WaitFor(log_pattern="ready$", timeout_ms=100),
            )
        with pytest.raises(TimeoutError, match="not become ready"):
            client.processes.wait("sdk-slow", 0.05, until="ready")
        client.processes.input("sdk-slow", "go\n")
        assert client.wait("sdk-slow", 30, until="ready").ready is True
        client.stop("sdk-web")
        client.processes.kill("sdk-slow")
        assert client.wait("sdk-web", 30).status == "stopped"
        pruned = client.prune()
        assert web.id in pruned
        assert len(pruned) == 2
        assert client.list(name="sdk-web") == []
        with pytest.raises(ValueError, match="port:PORT"):
            WaitFor.parse("tcp:80")
        assert WaitFor.parse("http://127.0.0.1:1/x").http_get == "http://127.0.0.1:1/x"
        assert WaitFor.parse("log:a:b").log_pattern == "a:b"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_sdk_async(checked_shared_server: Server) -> None:
    import sandbox_agent

    with checked_shared_server.client() as c:
        now = _now(c)
    async with sandbox_agent.AsyncClient(checked_shared_server.url) as client:
        events = client.processes.events(last_event_id=now)
        body = py("print('up and ready')\nimport sys\nsys.stdin.readline()")
        started = await client.start(
            body["command"], body["args"], interactive=True, name="sdk-async", wait_for="log:ready$"
        )
        assert started.ready is True
        first = await anext(events)
        assert first.kind == "created"
        assert first.process is not None
        assert first.process.status == "running"  # the /v1/processes shape
        assert [p.id for p in await client.processes.list(status="running", name="sdk-async")] == [started.id]
        await client.processes.kill("sdk-async")
        assert (await client.processes.wait("sdk-async", 30)).status == "exited"
        assert await client.prune() == [started.id]
        await events.aclose()  # type: ignore[attr-defined]


# -- the command line --------------------------------------------------------------------


def test_cli_dev_server_recipe(checked_shared_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox_agent.cli import main

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--url", checked_shared_server.url, "process", *args])
        out, err = capsys.readouterr()
        return status, out, err

    port = free_port()
    server = ["--", sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    status, out, err = cli("start", "--name", "cli-web", "--label", "app=cli", "--wait-for", f"port:{port}", *server)
    assert status == 0, err
    process_id = out.strip()
    # Ready when the id is printed: the port answers.
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    status, out, _ = cli("ls", "--status", "running", "--label", "app=cli", "-q")
    assert (status, out.split()) == (0, [process_id])
    wait_for(lambda: "PORTS" in cli("ls", "--name", "cli-web")[1], what="the ports column")
    status, out, _ = cli("ls", "--name", "cli-web")
    assert "cli-web" in out
    assert str(port) in out
    assert cli("wait", "--ready", "cli-web")[0] == 0

    # Exits before it is ready: exit status 1, one line that says so.
    status, _, err = cli("start", "--wait-for", f"port:{free_port()}", "--", sys.executable, "-c", "pass")
    assert status == 1
    assert "exited" in err
    assert "before it was ready" in err
    # Not ready in time: 124, left running.
    waiting = ["--", sys.executable, "-c", "import time; time.sleep(60)"]
    status, _, err = cli("start", "--name", "cli-slow", "--wait-for", "log:never", "--wait-timeout", "0.2", *waiting)
    assert status == 124
    assert "left running" in err
    assert cli("kill", "cli-slow", "cli-web")[0] == 0
    assert cli("wait", "cli-web")[0] == 128 + 9
    status, out, _ = cli("prune")
    assert status == 0
    assert process_id in out.split()
    assert cli("ls", "--status", "exited", "-q")[1] == ""
    with pytest.raises(SystemExit) as exited:
        cli("start", "--wait-for", "tcp:1", "--", "true")
    assert exited.value.code == 2
    assert "port:PORT" in capsys.readouterr().err


# -- the engine, in process ----------------------------------------------------------------


def test_engine_events_and_close_with_a_watch_pending(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import os
    import signal
    import uuid

    from conftest import MARKER, marked_pids
    from sandbox_agent.engine import ProcessManager, SpawnRequest
    from sandbox_agent.engine.events import Event, Reset
    from sandbox_agent.engine.services import WaitFor

    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, marker)

    pending_pid: list[int] = []

    async def main() -> list[str]:
        manager = ProcessManager(tmp_path / "data")
        await manager.start()
        try:
            events = manager.events.subscribe(manager.events.last_id)
            code = "import sys\nprint('ready')\nsys.stdin.readline()"
            ready = await manager.spawn(
                SpawnRequest(
                    command=sys.executable,
                    args=["-u", "-c", code],
                    interactive=True,
                    name="eng",
                    wait_for=WaitFor(log_pattern="^ready$"),
                )
            )
            assert ready.service is not None
            assert ready.service.ready
            pending = await manager.spawn(
                SpawnRequest(
                    command=sys.executable,
                    args=["-u", "-c", "import sys\nsys.stdin.readline()"],
                    interactive=True,
                    wait_for=WaitFor(log_pattern="never", timeout_ms=0),
                )
            )
            kinds = []
            async with asyncio.timeout(15):
                async for event in events:
                    assert isinstance(event, Event)
                    kinds.append(f"{event.kind} {event.record.id}")
                    if len(kinds) == 3:
                        break
            # A reset for an id the history does not hold.
            async with asyncio.timeout(15):
                async for event in manager.events.subscribe(1):
                    assert isinstance(event, Reset)
                    break
            assert kinds == [f"created {ready.id}", f"ready {ready.id}", f"created {pending.id}"]
            manager.kill("eng")
            async with asyncio.timeout(15):
                await manager.wait(ready.id)
            assert pending.pid is not None
            pending_pid.append(pending.pid)
            return kinds
        finally:
            # The pending readiness watch ends with the manager (warnings are errors here).
            await manager.close()

    asyncio.run(main())
    os.killpg(pending_pid[0], signal.SIGKILL)
    wait_for(lambda: not marked_pids(marker), what="the processes to be gone")

"""Every endpoint of SPEC sections 1 to 5 against a real server with real processes."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import MARKER, Server, py, start, wait_exited, wait_for, wait_log
from sandbox_agent.engine.dirpool import POOL_DIR


def process_dirs(server: Server) -> list[Path]:
    """The process directories on disk (not the pool of ones made ahead)."""
    return [p for p in (server.data_dir / "processes").iterdir() if p.name != POOL_DIR]


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == status
    for needle in needles:
        assert needle.lower() in body["detail"].lower(), body["detail"]
    return body


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != b"Z":
                members.append(int(entry))
    return members


# -- server basics -------------------------------------------------------------


def test_health_and_openapi(client: httpx.Client) -> None:
    health = client.get("/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["version"]
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/process", "post"),
        ("/v1/process", "get"),
        ("/v1/process/{process_id}", "get"),
        ("/v1/process/{process_id}", "delete"),
        ("/v1/process/{process_id}/stop", "post"),
        ("/v1/process/{process_id}/kill", "post"),
        ("/v1/process/{process_id}/logs", "get"),
        ("/v1/health", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert "StartProcess" in spec["components"]["schemas"]
    assert "exitCode" in spec["components"]["schemas"]["Process"]["properties"]


def test_root_redirects_to_the_inspector(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_unknown_route_is_a_problem(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/nothing"), 404, "/v1/nothing")
    assert_problem(client.put("/v1/process"), 405, "PUT")


# -- start ---------------------------------------------------------------------------


def test_start_returns_a_running_process(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post("/v1/process", json={"command": "sleep", "args": ["600"], "cwd": str(tmp_path)})
    assert response.status_code == 201
    process = response.json()
    assert response.headers["location"] == f"/v1/process/{process['id']}"
    assert process["status"] == "running"
    assert process["command"] == "sleep"
    assert process["args"] == ["600"]
    assert process["cwd"] == str(tmp_path)
    assert isinstance(process["pid"], int)
    assert abs(process["startedAt"] - time.time()) < 60
    assert "stoppedAt" not in process
    assert set(process["logPaths"]) == {"stdout", "stderr", "combined"}
    for path in process["logPaths"].values():
        assert os.path.isabs(path)
        assert process["id"] in path
    assert client.get(f"/v1/process/{process['id']}").json() == process
    client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])


def test_cwd_env_and_args_reach_the_process(client: httpx.Client, tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "print(os.getcwd(), os.environ['GREETING'], os.environ.get('SANDBOX_AGENT_TOKEN'), sys.argv[1:])"
    )
    body = py(code)
    body["args"] += ["a b", "ünï"]
    body.update(cwd=str(tmp_path), env={"GREETING": "hi there"})
    process = start(client, body)
    wait_exited(client, process["id"])
    logs = client.get(f"/v1/process/{process['id']}/logs", params={"strip_timestamps": "true"}).json()
    assert logs["content"] == f"[stdout] {tmp_path} hi there None ['a b', 'ünï']\n"


def test_env_goes_over_the_servers_own_and_changes_only_that_process(client: httpx.Client) -> None:
    """A request's env replaces the server's value of a variable it names, adds the
    others, and leaves the next process with the server's environment as it was."""
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    changed = {"HOME": "/nowhere", "PATH": os.environ["PATH"], "ADDED": "yes"}
    results = []
    for env in (changed, None):
        process = start(client, {**py(code), "env": env})
        wait_exited(client, process["id"])
        logs = client.get(f"/v1/process/{process['id']}/logs", params={"strip_timestamps": "true"}).json()
        results.append(json.loads(logs["content"].removeprefix("[stdout] ")))
    first, second = results
    assert first["HOME"] == "/nowhere"
    assert first["ADDED"] == "yes"
    assert first["PATH"] == second["PATH"] == os.environ["PATH"]
    assert second["HOME"] == os.environ["HOME"]
    assert "ADDED" not in second
    # Everything else is the server's, in both: the test's environment when it started
    # the server (it has changed a little since: PYTEST_CURRENT_TEST), and the marker.
    assert {k: v for k, v in first.items() if k not in changed} == {k: v for k, v in second.items() if k not in changed}
    assert second[MARKER]
    assert second["LANG"] == os.environ["LANG"]


def test_env_cannot_leak_the_server_token(server_factory: Any) -> None:
    server = server_factory(token="s3cret")
    with server.client() as client:
        process = start(client, py("import os; print(sorted(k for k in os.environ if 'SANDBOX_AGENT_TOKEN' in k))"))
        wait_exited(client, process["id"])
        assert "[]" in client.get(f"/v1/process/{process['id']}/logs").json()["content"]


def test_stdin_is_dev_null(client: httpx.Client) -> None:
    process = start(client, py("import sys; print(repr(sys.stdin.read()))"))
    wait_exited(client, process["id"])
    assert "''" in client.get(f"/v1/process/{process['id']}/logs").json()["content"]


def test_a_body_sent_without_json_content_type_is_still_json(server: Server) -> None:
    response = httpx.post(f"{server.url}/v1/process", content=b'{"command": "true"}')
    assert response.status_code == 201, response.text
    response = httpx.post(
        f"{server.url}/v1/process",
        content=b'{"command": "true"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text
    with server.client() as client:
        for process in client.get("/v1/process").json()["processes"]:
            wait_exited(client, process["id"])


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"command": ""}, ["command is empty"]),
        ({"command": "   "}, ["command is empty"]),
        ({"command": "no-such-program-xyz"}, ["not found", "no-such-program-xyz", "PATH"]),
        ({"command": "/no/such/file"}, ["does not exist"]),
        ({"command": "/tmp"}, ["directory"]),
        ({"command": "true", "cwd": "/no/such/dir"}, ["/no/such/dir", "does not exist"]),
        ({"command": "true", "cwd": "/etc/hostname"}, ["not a directory"]),
        ({"command": "true", "env": {"": "x"}}, ["empty variable name"]),
        ({"command": "true", "env": {"A=B": "x"}}, ["A=B", "'='"]),
        ({"command": "true", "env": {"A\u0000B": "x"}}, ["NUL"]),
        ({"command": "true", "env": {"A": "x\u0000y"}}, ["NUL", "'A'"]),
        ({"command": "true", "args": ["a\u0000b"]}, ["NUL"]),
        ({"command": 5}, ["command", "string"]),
        ({"command": "true", "args": "-l"}, ["args", "list"]),
        ({"command": "true", "args": [1]}, ["args.0", "string"]),
        ({"command": "true", "env": {"A": 1}}, ["env.A", "string"]),
        ({"command": "true", "env": ["A=1"]}, ["env", "dictionary"]),
        ({"args": ["x"]}, ["command", "required"]),
        (["true"], ["JSON object"]),
        ({"command": "true", "tty": True, "terminalSize": {"cols": 0, "rows": 24}}, ["cols"]),
    ],
)
def test_bad_start_requests_are_400_and_create_nothing(
    server: Server, client: httpx.Client, body: Any, needles: list[str]
) -> None:
    assert_problem(client.post("/v1/process", json=body), 400, *needles)
    assert client.get("/v1/process").json() == {"processes": []}
    assert process_dirs(server) == []


def test_not_executable_and_malformed_json(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert_problem(client.post("/v1/process", json={"command": str(script)}), 400, "not executable")
    response = client.post("/v1/process", content=b'{"command": "true",', headers={"content-type": "application/json"})
    assert_problem(response, 400, "not valid JSON")
    response = client.post("/v1/process", content=b"", headers={"content-type": "application/json"})
    assert_problem(response, 400)
    assert process_dirs(server) == []


def test_relative_command_resolves_against_cwd(client: httpx.Client, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho from-script\n")
    script.chmod(0o755)
    process = start(client, {"command": "./hello.sh", "cwd": str(tmp_path)})
    assert wait_exited(client, process["id"])["exitCode"] == 0
    assert "from-script" in client.get(f"/v1/process/{process['id']}/logs").json()["content"]


# -- ids ------------------------------------------------------------------------------


def test_unknown_and_malformed_ids(client: httpx.Client) -> None:
    unknown = "0" * 26
    assert_problem(client.get(f"/v1/process/{unknown}"), 404, unknown)
    assert_problem(client.post(f"/v1/process/{unknown}/stop"), 404)
    assert_problem(client.post(f"/v1/process/{unknown}/kill"), 404)
    assert_problem(client.delete(f"/v1/process/{unknown}"), 404)
    assert_problem(client.get(f"/v1/process/{unknown}/logs"), 404)
    for bad in ["ABC", "x" * 27, "has space", "semi;colon", "%2e%2e"]:
        assert_problem(client.get(f"/v1/process/{bad}"), 404, "not a process id")
        assert_problem(client.get(f"/v1/process/{bad}/logs"), 404, "not a process id")
        assert_problem(client.post(f"/v1/process/{bad}/stop"), 404, "not a process id")
    # httpx normalizes dot segments away; http.client sends the path as it is.
    connection = http.client.HTTPConnection("127.0.0.1", client.base_url.port)
    try:
        connection.request("GET", "/v1/process/../logs")
        first = connection.getresponse()
        first.read()
        assert first.status == 404
        connection.request("GET", "/v1/process/..")
        response = connection.getresponse()
        assert response.status == 404
        assert b"not a process id" in response.read()
    finally:
        connection.close()
    assert_problem(client.get("/v1/process/a%2Fb"), 404)
    assert_problem(client.get("/v1/process/a/b/c"), 404)


def test_ids_are_never_reused(client: httpx.Client) -> None:
    seen = set()
    for _ in range(5):
        process = start(client, {"command": "true"})
        wait_exited(client, process["id"])
        assert client.delete(f"/v1/process/{process['id']}").status_code == 204
        assert process["id"] not in seen
        seen.add(process["id"])


# -- list ----------------------------------------------------------------------------


def test_list_is_newest_first(client: httpx.Client) -> None:
    ids = [start(client, {"command": "true"})["id"] for _ in range(4)]
    listed = [p["id"] for p in client.get("/v1/process").json()["processes"]]
    assert listed == list(reversed(ids))
    for process_id in ids:
        wait_exited(client, process_id)


# -- stop and kill ---------------------------------------------------------------


def test_stop_a_process_that_handles_sigterm_reports_its_code(client: httpx.Client) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)"
    )
    process = start(client, py(code))
    wait_log(client, process["id"], "ready")
    response = client.post(f"/v1/process/{process['id']}/stop")
    assert response.status_code == 204
    assert response.content == b""
    final = wait_exited(client, process["id"])
    assert final["status"] == "stopped"
    assert final["exitCode"] == 0
    assert final["exitSignal"] is None
    assert final["stoppedAt"] >= final["startedAt"]


def test_stop_a_process_that_dies_of_sigterm(server: Server, client: httpx.Client) -> None:
    process = start(client, {"command": "sleep", "args": ["600"]})
    # An empty body with a JSON content type, as some clients send it.
    response = httpx.post(
        f"{server.url}/v1/process/{process['id']}/stop", content=b"", headers={"content-type": "application/json"}
    )
    assert response.status_code == 204
    final = wait_exited(client, process["id"])
    assert (final["status"], final["exitCode"], final["exitSignal"]) == ("stopped", None, 15)


def test_stop_escalates_to_sigkill_after_the_stop_timeout(client: httpx.Client) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)"
    )
    process = start(client, {**py(code), "stopTimeout": 0.2})
    wait_log(client, process["id"], "ready")
    client.post(f"/v1/process/{process['id']}/stop")
    final = wait_exited(client, process["id"])
    assert (final["status"], final["exitCode"], final["exitSignal"]) == ("stopped", None, 9)


def test_stop_and_kill_on_an_exited_process_change_nothing(client: httpx.Client) -> None:
    process = start(client, py("raise SystemExit(7)"))
    before = wait_exited(client, process["id"])
    assert client.post(f"/v1/process/{process['id']}/stop").status_code == 204
    assert client.post(f"/v1/process/{process['id']}/kill").status_code == 204
    assert client.get(f"/v1/process/{process['id']}").json() == before
    assert before["exitCode"] == 7


def test_kill_reports_killed(client: httpx.Client) -> None:
    process = start(client, {"command": "sleep", "args": ["600"]})
    assert client.post(f"/v1/process/{process['id']}/kill").status_code == 204
    final = wait_exited(client, process["id"])
    assert (final["status"], final["exitCode"], final["exitSignal"]) == ("killed", None, 9)


@pytest.mark.parametrize("action", ["stop", "kill"])
def test_signals_reach_the_whole_process_group(client: httpx.Client, action: str) -> None:
    process = start(client, {"command": "bash", "args": ["-c", "sleep 600 & sleep 600 & echo started; wait"]})
    wait_log(client, process["id"], "started")
    pgid = process["pid"]
    wait_for(lambda: len(group_members(pgid)) == 3, 10, "bash and its two sleeps")
    client.post(f"/v1/process/{process['id']}/{action}")
    wait_exited(client, process["id"])
    wait_for(lambda: group_members(pgid) == [], 10, "every member of the group to be gone")


# -- delete ----------------------------------------------------------------------------


def test_delete_removes_record_and_logs(client: httpx.Client) -> None:
    process = start(client, py("print('x')"))
    directory = Path(process["logPaths"]["combined"]).parent
    assert directory.is_dir()
    wait_exited(client, process["id"])
    assert client.delete(f"/v1/process/{process['id']}").status_code == 204
    assert not directory.exists()
    assert_problem(client.get(f"/v1/process/{process['id']}"), 404)
    assert client.get("/v1/process").json() == {"processes": []}


def test_delete_of_a_running_process_is_refused(client: httpx.Client) -> None:
    process = start(client, {"command": "sleep", "args": ["600"]})
    assert_problem(client.delete(f"/v1/process/{process['id']}"), 400, "stop or kill it first")
    assert client.get(f"/v1/process/{process['id']}").json()["status"] == "running"
    client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])
    assert client.delete(f"/v1/process/{process['id']}").status_code == 204


# -- logs -------------------------------------------------------------------------------


@pytest.fixture
def finished(client: httpx.Client) -> dict[str, Any]:
    code = (
        "import sys\n"
        "for i in range(5):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "sys.stdout.buffer.write(b'bad \\xff\\xfe bytes\\n')\n"
    )
    process = start(client, py(code))
    wait_exited(client, process["id"])
    return process


def test_logs_streams_tail_and_strip(client: httpx.Client, finished: dict[str, Any]) -> None:
    url = f"/v1/process/{finished['id']}/logs"
    combined = client.get(url).json()
    assert combined["lines"] == 11
    lines = combined["content"].splitlines()
    assert all(line[0] == "[" and line[24:27] == "Z] " for line in lines)
    assert sorted(line[27:] for line in lines if "[stderr]" in line) == [f"[stderr] err {i}" for i in range(5)]
    stdout = client.get(url, params={"stream": "stdout", "stripTimestamps": "true"}).json()
    assert stdout["content"] == "".join(f"out {i}\n" for i in range(5)) + "bad \ufffd\ufffd bytes\n"
    stderr = client.get(url, params={"stream": "stderr", "tail": 2, "strip_timestamps": "true"}).json()
    assert stderr == {"content": "err 3\nerr 4\n", "lines": 2}
    assert client.get(url, params={"tail": 0}).json() == {"content": "", "lines": 0}
    assert client.get(url, params={"tail": 1000}).json()["lines"] == 11
    raw = Path(finished["logPaths"]["stdout"]).read_bytes()
    assert raw.endswith(b"] bad \xff\xfe bytes\n")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"stream": "both"}, "stream must be one of"),
        ({"tail": "-1"}, "tail must be a whole number"),
        ({"tail": "ten"}, "tail must be a whole number"),
        ({"strip_timestamps": "maybe"}, "strip_timestamps must be true or false"),
        ({"follow": "perhaps"}, "follow must be true or false"),
    ],
)
def test_bad_log_parameters(
    client: httpx.Client, finished: dict[str, Any], params: dict[str, str], needle: str
) -> None:
    assert_problem(client.get(f"/v1/process/{finished['id']}/logs", params=params), 400, needle)


def test_a_partial_line_shows_while_the_process_runs(client: httpx.Client) -> None:
    code = "import sys, time\nsys.stdout.write('Password: ')\nsys.stdout.flush()\ntime.sleep(600)"
    process = start(client, py(code))
    content = wait_log(client, process["id"], "Password: ", timeout=5)
    assert content.endswith("] [stdout] Password: \n")
    client.post(f"/v1/process/{process['id']}/kill")
    wait_exited(client, process["id"])


def test_output_without_final_newline_is_logged_at_exit(client: httpx.Client) -> None:
    process = start(client, py("import sys; sys.stdout.write('no newline at the end')"))
    wait_exited(client, process["id"])
    logs = client.get(f"/v1/process/{process['id']}/logs", params={"strip_timestamps": "true"}).json()
    assert logs == {"content": "[stdout] no newline at the end\n", "lines": 1}


def test_a_large_burst_is_captured_whole(client: httpx.Client) -> None:
    code = "import sys\nw = sys.stdout.write\nfor i in range(200000):\n    w(f'line {i:06d} ' + 'x' * 80 + '\\n')\n"
    process = start(client, py(code))
    assert wait_exited(client, process["id"], 60)["exitCode"] == 0
    content = client.get(
        f"/v1/process/{process['id']}/logs", params={"stream": "stdout", "strip_timestamps": "true"}
    ).json()["content"]
    assert content == "".join(f"line {i:06d} " + "x" * 80 + "\n" for i in range(200000))


# -- auth and exposure ------------------------------------------------------------------


def test_token_is_required_everywhere_but_health(server_factory: Any) -> None:
    server = server_factory(token="tok-123")
    base = server.url
    assert httpx.get(f"{base}/v1/health").status_code == 200
    unknown = "0" * 26
    for method, path in [
        ("GET", "/v1/process"),
        ("POST", "/v1/process"),
        ("GET", f"/v1/process/{unknown}"),
        ("GET", f"/v1/process/{unknown}/logs?follow=true"),
        ("POST", f"/v1/process/{unknown}/kill"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "tok-123"}):
            response = httpx.request(method, base + path, headers=headers, json={"command": "true"})
            body = assert_problem(response, 401, "Authorization: Bearer")
            assert body["title"] == "Unauthorized"
    with server.client() as client:
        assert client.get("/v1/process").status_code == 200
        assert client.get("/ui/").status_code == 200


def test_non_loopback_without_token_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox_agent", "server", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "SANDBOX_AGENT_TOKEN"},
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_vars_configure_the_server(tmp_path: Path) -> None:
    from conftest import free_port

    port = free_port()
    env = dict(os.environ, SANDBOX_AGENT_PORT=str(port), SANDBOX_AGENT_DATA_DIR=str(tmp_path / "d"))
    env["SANDBOX_AGENT_TOKEN"] = "from-env"
    proc = subprocess.Popen([sys.executable, "-m", "sandbox_agent", "server"], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/v1/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 20, "the server")
        assert httpx.get(f"{url}/v1/process").status_code == 401
        assert httpx.get(f"{url}/v1/process", headers={"Authorization": "Bearer from-env"}).status_code == 200
        assert (tmp_path / "d" / "processes").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_a_second_server_on_the_same_data_dir_is_refused(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox_agent", "server", "--port", "0", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "another sandbox-agent server is using" in result.stderr
    assert "Traceback" not in result.stderr


def test_cors_allows_the_configured_origin(server_factory: Any) -> None:
    server = server_factory(token="t", extra_args=["--cors-allow-origin", "http://example.test"])
    preflight = httpx.options(
        f"{server.url}/v1/process",
        headers={
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://example.test"
    denied = httpx.get(f"{server.url}/v1/process", headers={"Origin": "http://example.test"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "http://example.test"
    other = httpx.get(f"{server.url}/v1/health", headers={"Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in other.headers


def test_kill_and_stop_right_after_start_reach_the_command(client: httpx.Client) -> None:
    # The supervisor must take requests from the moment the start is answered.
    for action, status, sig in [("kill", "killed", 9), ("stop", "stopped", 15)] * 5:
        process = start(client, {"command": "sleep", "args": ["600"]})
        assert client.post(f"/v1/process/{process['id']}/{action}").status_code == 204
        final = wait_exited(client, process["id"])
        assert (final["status"], final["exitSignal"]) == (status, sig)


def test_a_hostile_web_page_cannot_start_processes(server: Server) -> None:
    # A "simple" cross-origin request: the browser sends it without asking first.
    response = httpx.post(
        f"{server.url}/v1/process",
        content=b'{"command": "touch", "args": ["/tmp/pwned"]}',
        headers={"Origin": "http://evil.test", "Content-Type": "text/plain"},
    )
    assert_problem(response, 403, "cross-origin request from http://evil.test refused", "--cors-allow-origin")
    # DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
    rebound = httpx.post(
        f"{server.url}/v1/process",
        json={"command": "true"},
        headers={"Host": f"evil.test:{server.port}", "Origin": f"http://evil.test:{server.port}"},
    )
    assert_problem(rebound, 403, "evil.test", "--token")
    with server.client() as client:
        assert client.get("/v1/process").json() == {"processes": []}
        # The inspector's own requests are same-origin, under any loopback name.
        for host in ("127.0.0.1", "localhost"):
            origin = f"http://{host}:{server.port}"
            headers = {"Host": f"{host}:{server.port}", "Origin": origin}
            process = client.post("/v1/process", json={"command": "true"}, headers=headers)
            assert process.status_code == 201, process.text
            wait_exited(client, process.json()["id"])


def test_with_a_token_any_host_name_may_be_used(server_factory: Any) -> None:
    server = server_factory(token="t0k")
    headers = {"Host": f"sandbox.example:{server.port}", "Authorization": "Bearer t0k"}
    assert httpx.get(f"{server.url}/v1/process", headers=headers).status_code == 200
    hostile = dict(headers, Origin="http://evil.test")
    assert_problem(httpx.get(f"{server.url}/v1/process", headers=hostile), 403, "cross-origin")


def test_many_concurrent_starts_of_quick_commands_all_succeed(server: Server, client: httpx.Client) -> None:
    # Quick commands exit while their start is being answered: every race on the way
    # (the supervisor gone before it is watched, its /proc entry vanishing mid-read)
    # must still give a 201 and a recorded exit.
    from concurrent.futures import ThreadPoolExecutor

    def start_one(_: int) -> int:
        return httpx.post(f"{server.url}/v1/process", json={"command": "true"}, timeout=60).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(start_one, range(300)))
    assert codes == [201] * 300
    for process in client.get("/v1/process").json()["processes"]:
        assert wait_exited(client, process["id"])["exitCode"] == 0

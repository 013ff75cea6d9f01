"""``sandbox_agent.Client`` against a real server: every method, errors, follow resuming."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

import sandbox_agent
from conftest import Server, free_port, wait_for
from sandbox_agent import BadRequest, Client, ConnectionFailed, NotFound, Unauthorized
from sandbox_agent.client import _protocol

UNKNOWN_ID = "0" * 26
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


def argv(code: str) -> tuple[str, list[str]]:
    return sys.executable, ["-u", "-c", code]


@pytest.fixture
def server(checked_shared_server: Server) -> Server:
    """One server per module (restart and token tests make their own)."""
    return checked_shared_server


@pytest.fixture
def sdk(server: Server) -> Iterator[Client]:
    with Client(server.url, server.token, timeout=10) as client:
        yield client


def kill_and_wait(client: Client, process_id: str) -> sandbox_agent.Process:
    client.kill(process_id)
    return client.wait(process_id, timeout=10)


def first_line(lines: Iterator[str], needle: str) -> str:
    for line in lines:
        if needle in line:
            return line
    raise AssertionError(f"the follow ended before {needle!r}")


# -- every method -------------------------------------------------------------------


def test_health(sdk: Client) -> None:
    health = sdk.health()
    assert health.status == "ok"
    assert health.version == sandbox_agent.__version__


def test_start_get_list_logs_delete(sdk: Client, tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd()); print(os.environ['GREETING']); print('oops', file=sys.stderr)"
    process = sdk.start(*argv(code), cwd=str(tmp_path), env={"GREETING": "hello"})
    assert process.status in ("starting", "running", "stopped")
    assert process.command == sys.executable
    assert process.args == ["-u", "-c", code]
    assert process.cwd == str(tmp_path)

    final = sdk.wait(process.id, timeout=10)
    assert (final.status, final.exit_code, final.exit_signal) == ("stopped", 0, None)
    assert final.stopped_at is not None
    assert final.stopped_at >= final.started_at
    assert Path(final.log_paths.combined).is_file()
    assert sdk.get(process.id) == final
    assert process.id in [p.id for p in sdk.list()]

    combined = sdk.logs(process.id, strip_timestamps=True)
    assert combined.content == f"[stdout] {tmp_path}\n[stdout] hello\n[stderr] oops\n"
    assert combined.lines == 3
    assert sdk.logs(process.id, stream="stdout", tail=1, strip_timestamps=True).content == "hello\n"
    assert sdk.logs(process.id, stream="stderr").content.endswith("Z] oops\n")
    assert sdk.logs(process.id, tail=0).lines == 0

    sdk.delete(process.id)
    with pytest.raises(NotFound):
        sdk.get(process.id)
    assert process.id not in [p.id for p in sdk.list()]


def test_list_newest_first(sdk: Client) -> None:
    first = sdk.start(*argv("pass"))
    second = sdk.start(*argv("pass"))
    ids = [p.id for p in sdk.list()]
    assert ids.index(second.id) < ids.index(first.id)
    for process in (first, second):
        sdk.wait(process.id, timeout=10)


def test_stop(sdk: Client) -> None:
    process = sdk.start(*argv(SLEEPER))
    first_line(sdk.follow(process.id), "ready")
    sdk.stop(process.id)
    final = sdk.wait(process.id, timeout=10)
    assert (final.status, final.exit_code, final.exit_signal) == ("stopped", None, signal.SIGTERM)
    sdk.stop(process.id)  # no-op once exited
    assert sdk.get(process.id).status == "stopped"


def test_kill(sdk: Client) -> None:
    process = sdk.start(*argv(SLEEPER))
    final = kill_and_wait(sdk, process.id)
    assert (final.status, final.exit_code, final.exit_signal) == ("killed", None, signal.SIGKILL)


def test_wait_timeout(sdk: Client) -> None:
    process = sdk.start(*argv(SLEEPER))
    with pytest.raises(TimeoutError, match=process.id):
        sdk.wait(process.id, timeout=0.2)
    kill_and_wait(sdk, process.id)


def test_start_rejects_a_string_as_args(sdk: Client) -> None:
    with pytest.raises(TypeError, match="sequence"):
        sdk.start("echo", "hello")  # type: ignore[arg-type]


# -- errors -----------------------------------------------------------------------------


def test_errors_carry_the_problem_detail(sdk: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as not_found:
        sdk.get(UNKNOWN_ID)
    assert UNKNOWN_ID in not_found.value.detail
    assert (not_found.value.status, not_found.value.title) == (404, "Not Found")
    for call in (sdk.stop, sdk.kill, sdk.delete, sdk.logs, lambda i: next(sdk.follow(i)), sdk.wait):
        with pytest.raises(NotFound):
            call(UNKNOWN_ID)

    with pytest.raises(NotFound, match="not a process id"):
        sdk.get("nope-does-not-exist")
    with pytest.raises(NotFound, match="/v1/process/"):
        sdk.get("../health")  # one path segment: it does not reach /v1/health
    with pytest.raises(BadRequest) as missing_cwd:
        sdk.start("true", cwd=str(tmp_path / "missing"))
    assert missing_cwd.value.status == 400
    assert "missing" in missing_cwd.value.detail
    with pytest.raises(BadRequest):
        sdk.start("no-such-command-here")
    with pytest.raises(BadRequest):
        sdk.logs(UNKNOWN_ID, stream="nope")  # type: ignore[arg-type]

    process = sdk.start(*argv(SLEEPER))
    with pytest.raises(BadRequest, match="stop or kill"):
        sdk.delete(process.id)
    kill_and_wait(sdk, process.id)


def test_connection_failed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client:
        with pytest.raises(ConnectionFailed, match=r"127\.0\.0\.1") as failed:
            client.list()
        assert isinstance(failed.value.__cause__, httpx.TransportError)
        with pytest.raises(ConnectionFailed):
            next(client.follow(UNKNOWN_ID))


def test_token(server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_factory(token="s3cret")
    with Client(server.url) as anonymous:
        assert anonymous.health().status == "ok"  # open without a token
        with pytest.raises(Unauthorized, match="token") as missing:
            anonymous.list()
        assert missing.value.status == 401
    with Client(server.url, token="wrong") as wrong, pytest.raises(Unauthorized):
        wrong.get(UNKNOWN_ID)

    monkeypatch.setenv("SANDBOX_AGENT_URL", server.url)
    monkeypatch.setenv("SANDBOX_AGENT_TOKEN", "s3cret")
    with Client() as client:
        assert client.url == server.url
        process = client.start(*argv("print('hi')"))
        assert list(client.follow(process.id, strip_timestamps=True)) == ["[stdout] hi"]


def test_url_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_AGENT_URL", raising=False)
    with Client() as client:
        assert client.url == "http://127.0.0.1:2468"
    with Client("localhost:8080/") as client:
        assert client.url == "http://localhost:8080"


def test_context_manager_closes() -> None:
    with Client() as client:
        pass
    assert client._http.is_closed


# -- follow -----------------------------------------------------------------------------


def test_follow_snapshot_then_live_then_exit(sdk: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = f"""
import os, sys, time
print('one'); print('two', file=sys.stderr)
while not os.path.exists({str(go)!r}): time.sleep(0.01)
print('three'); sys.exit(4)
"""
    process = sdk.start(*argv(code))
    wait_for(lambda: sdk.logs(process.id).lines == 2, what="the first lines")
    lines = sdk.follow(process.id, strip_timestamps=True)
    assert next(lines) == "[stdout] one"
    assert next(lines) == "[stderr] two"
    go.touch()
    assert list(lines) == ["[stdout] three"]
    assert sdk.get(process.id).exit_code == 4

    assert list(sdk.follow(process.id, tail=1, stream="stdout", strip_timestamps=True)) == ["three"]
    assert list(sdk.follow(process.id, tail=0)) == []
    stamped = list(sdk.follow(process.id, stream="stderr"))
    assert len(stamped) == 1
    assert stamped[0].startswith("[20")
    assert stamped[0].endswith("Z] two")


def test_follow_renders_snapshot_and_live_lines_alike(sdk: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = f"""
import os, sys, time
sys.stdout.write('a\\rb\\r\\n')
while not os.path.exists({str(go)!r}): time.sleep(0.01)
sys.stdout.write('a\\rb\\r\\n')
"""
    process = sdk.start(*argv(code))
    wait_for(lambda: sdk.logs(process.id).lines == 1, what="the first line")
    lines = sdk.follow(process.id, stream="stdout", strip_timestamps=True)
    snapshot_line = next(lines)
    go.touch()
    assert list(lines) == [snapshot_line]
    assert snapshot_line == "a\nb"


def test_follow_break_closes_the_connection(sdk: Client) -> None:
    process = sdk.start(*argv("print('ready'); import time; time.sleep(60)"))
    with closing(sdk.follow(process.id)) as lines:
        first_line(lines, "ready")
    kill_and_wait(sdk, process.id)


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_follow_resumes_after_the_server_drops(server_factory: Callable[..., Server], tmp_path: Path, how: str) -> None:
    """Lines written before, during and after a server outage: each exactly once, in order."""
    server = server_factory()
    gates = [tmp_path / "gate1", tmp_path / "gate2"]
    code = f"""
import os, time
def burst(first):
    for i in range(first, first + 100): print(i)
def wait(path):
    while not os.path.exists(path): time.sleep(0.01)
burst(0); wait({str(gates[0])!r}); burst(100); wait({str(gates[1])!r}); burst(200)
"""
    with Client(server.url, timeout=5) as client:
        process = client.start(*argv(code))
        lines = client.follow(process.id, stream="stdout", strip_timestamps=True)
        seen = [next(lines) for _ in range(100)]

        server.stop(signal.SIGKILL if how == "crash" else signal.SIGTERM)
        gates[0].touch()  # the process writes lines 100-199 while no server runs
        wait_for(lambda: len(Path(process.log_paths.stdout).read_bytes().splitlines()) == 200, what="lines 100-199")
        # The follow reconnects, with backoff, while the server comes back.
        restarter = threading.Thread(target=server.start)
        restarter.start()
        try:
            seen += [next(lines) for _ in range(100)]
        finally:
            restarter.join()
        gates[1].touch()
        seen += list(lines)
        assert seen == [str(i) for i in range(300)]
        assert client.wait(process.id, timeout=10).exit_code == 0


def test_follow_gives_up_after_bounded_retries(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    with Client(server.url, reconnect_attempts=2) as client:
        process = client.start(*argv(SLEEPER))
        lines = client.follow(process.id)
        first_line(lines, "ready")
        server.crash()
        with pytest.raises(ConnectionFailed, match="2 attempts"):
            next(lines)
        server.start()
        kill_and_wait(client, process.id)


def test_wait_survives_a_restart(
    server_factory: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory()
    gate = tmp_path / "gate"
    code = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nraise SystemExit(7)"
    # Waits of 50 ms each, asked again: the test knows when one was answered.
    monkeypatch.setattr(_protocol, "_WAIT_CHUNK", 0.05)
    with Client(server.url, timeout=5) as client, ThreadPoolExecutor(1) as pool:
        process = client.start(*argv(code))
        polled = threading.Event()
        send = client._send

        def send_and_tell(call: _protocol.Call, timeout: Any = None) -> httpx.Response:
            answer = send(call, timeout=timeout)
            if call.path.endswith("/wait"):
                polled.set()
            return answer

        monkeypatch.setattr(client, "_send", send_and_tell)
        waiting = pool.submit(client.wait, process.id, 30)
        assert polled.wait(10)
        server.crash()
        gate.touch()  # the process exits while no server runs
        server.start()
        assert waiting.result(30).exit_code == 7


def test_import_needs_no_server_dependencies() -> None:
    code = "import sandbox_agent, sys; assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_minimal_start_answer_from_the_original_server_is_accepted() -> None:
    # The original answers a start with {id, status, logPaths} only: the client then
    # fetches the whole process instead of failing validation.
    from sandbox_agent.client import _protocol as _transport

    minimal = b'{"id": "abc", "status": "running", "logPaths": {"stdout": "a", "stderr": "b", "combined": "c"}}'
    assert _transport.parse_started(minimal) == "abc"
    full = (
        b'{"id": "abc", "command": "true", "args": [], "status": "running", "exitCode": null,'
        b' "logPaths": {"stdout": "a", "stderr": "b", "combined": "c"}, "startedAt": 1}'
    )
    started = _transport.parse_started(full)
    assert isinstance(started, sandbox_agent.Process)
    assert started.command == "true"

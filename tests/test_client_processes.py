"""``client.processes`` (the ``/v1/processes`` dialect) and terminal sessions, sync and async,
against a real server: real shells on real ptys. Every wait is for output, with a deadline."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from conftest import Server, free_port
from sandbox_agent import (
    AsyncClient,
    AsyncTerminalSession,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    TerminalClosed,
    TerminalSession,
    Unauthorized,
)
from sandbox_agent.client import TerminalState

UNKNOWN_ID = "0" * 26
BASH = ("bash", ["--norc", "--noprofile", "-i"])
BASH_ENV = {"PS1": "$ "}


@pytest.fixture
def server(checked_shared_server: Server) -> Server:
    return checked_shared_server


@pytest.fixture
def sdk(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=10) as client:
        yield client


def py(code: str) -> tuple[str, list[str]]:
    return sys.executable, ["-u", "-c", code]


def read_until(term: TerminalSession, needle: bytes, seen: bytearray, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {bytes(seen[-2000:])!r}"
        try:
            data = term.recv(timeout=left)
        except TimeoutError:
            continue
        assert data is not None, f"the process exited before {needle!r}; got {bytes(seen[-2000:])!r}"
        seen += data


def drain(term: TerminalSession, seen: bytearray, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (data := term.recv(timeout=max(0.01, deadline - time.monotonic()))) is not None:
        seen += data


# -- the dialect's calls ------------------------------------------------------------------


def test_config_round_trip(sdk: Client) -> None:
    config = sdk.processes.get_config()
    assert config.max_input_bytes_per_request > 0
    try:
        changed = sdk.processes.set_config(dataclasses.replace(config, max_output_bytes=4096))
        assert changed.max_output_bytes == 4096
        assert sdk.processes.get_config() == changed
        with pytest.raises(BadRequest):
            sdk.processes.set_config(dataclasses.replace(config, max_output_bytes=0))
    finally:
        sdk.processes.set_config(config)


def test_run(sdk: Client, tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd(), os.environ['A']); print('err', file=sys.stderr); sys.exit(3)"
    result = sdk.processes.run(*py(code), cwd=str(tmp_path), env={"A": "1"}, timeout=30)
    assert (result.exit_code, result.timed_out) == (3, False)
    assert (result.stdout, result.stderr) == (f"{tmp_path} 1\n", "err\n")

    big = sdk.processes.run(*py("print('x' * 10000)"), max_output_bytes=100)
    assert big.stdout_truncated
    assert len(big.stdout) == 100

    slow = sdk.processes.run(*py("import time; time.sleep(60)"), timeout=0.5)
    assert slow.timed_out
    assert slow.exit_code is None

    with pytest.raises(BadRequest, match="no-such-tool"):
        sdk.processes.run("no-such-tool")


def test_create_get_list_stop_kill_delete(sdk: Client) -> None:
    info = sdk.processes.create(*py("import time; time.sleep(60)"))
    assert (info.status, info.tty, info.interactive, info.owner) == ("running", False, False, "user")
    assert info.id in [p.id for p in sdk.processes.list()]
    assert sdk.processes.list(owner="system") == []
    assert sdk.processes.get(info.id).pid == info.pid
    with pytest.raises(Conflict):
        sdk.processes.delete(info.id)
    stopped = sdk.processes.stop(info.id, wait=10)
    assert stopped.exited
    assert stopped.exit_signal == 15
    sdk.processes.delete(info.id)
    with pytest.raises(NotFound):
        sdk.processes.get(info.id)

    other = sdk.processes.create(*py("import time; time.sleep(60)"))
    assert sdk.processes.kill(other.id, wait=10).exit_signal == 9
    # The same process through the other dialect.
    assert sdk.get(other.id).status == "killed"
    sdk.processes.delete(other.id)


def test_logs_as_entries_and_follow(sdk: Client) -> None:
    # Lines of one stream keep their order; the two pipes may interleave either way.
    code = "import sys; print('one'); print('two'); print('oops', file=sys.stderr)"
    info = sdk.processes.create(*py(code))
    entries = list(sdk.processes.follow(info.id))
    assert sorted((e.stream, e.text) for e in entries) == [
        ("stderr", "oops\n"),
        ("stdout", "one\n"),
        ("stdout", "two\n"),
    ]
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert next(e for e in entries if e.stream == "stdout").raw == b"one\n"

    logs = sdk.processes.logs(info.id, since=1)
    assert (logs.process_id, logs.stream) == (info.id, "combined")
    assert [e.sequence for e in logs.entries] == [2, 3]
    assert [e.text for e in sdk.processes.logs(info.id, stream="stdout", tail=1).entries] == ["two\n"]
    assert [e.sequence for e in sdk.processes.follow(info.id, since=2)] == [3]
    sdk.processes.delete(info.id)


def test_input_and_eof_to_stdin(sdk: Client) -> None:
    info = sdk.processes.create(*py("import sys; print(sys.stdin.read().upper())"), interactive=True)
    assert sdk.processes.input(info.id, "hello ") == 6
    assert sdk.processes.input(info.id, b"w\xc3\xb6rld", eof=True) == 6
    assert [e.text for e in sdk.processes.follow(info.id)] == ["HELLO WÖRLD\n"]
    with pytest.raises(Conflict):
        sdk.processes.input(info.id, "late")
    with pytest.raises(NotFound):
        sdk.processes.input(UNKNOWN_ID, "x")
    sdk.processes.delete(info.id)


# -- terminal sessions -------------------------------------------------------------------


def test_terminal_session(sdk: Client) -> None:
    shell = sdk.start(*BASH, env=BASH_ENV, tty=True, terminal_size=(100, 30))
    seen = bytearray()
    with sdk.processes.terminal(shell.id) as term:
        assert term.state is TerminalState.OPEN
        term.send("stty size\n")
        read_until(term, b"30 100", seen)
        term.resize(120, 40)
        term.send(b"stty size\n")
        read_until(term, b"40 120", seen)
        assert sdk.processes.resize(shell.id, 90, 20).cols == 90
        term.send("stty size; echo $((6*7))\n")
        read_until(term, b"20 90", seen)
        read_until(term, b"42", seen)

        term.resize(-1, 5)  # the server answers with an error frame; the session goes on
        with pytest.raises(BadRequest, match="resize"):
            read_until(term, b"never", seen)
        term.send("exit 7\n")
        drain(term, seen)
        assert (term.state, term.exit_code) == (TerminalState.EXITED, 7)
        assert term.recv() is None
        with pytest.raises(Conflict, match="exited"):
            term.send("more")
    assert term.state is TerminalState.CLOSED
    assert sdk.wait(shell.id, timeout=10).exit_code == 7
    sdk.delete(shell.id)


def test_closing_a_session_leaves_the_process_running(sdk: Client) -> None:
    shell = sdk.processes.create(*BASH, env=BASH_ENV, tty=True)
    seen = bytearray()
    with sdk.processes.terminal(shell.id) as term:
        term.send("echo first-$((1+1))\n")
        read_until(term, b"first-2", seen)
    with pytest.raises(TerminalClosed):
        term.send("x")
    with pytest.raises(TerminalClosed):
        term.recv()
    term.close()  # twice: nothing
    assert sdk.processes.get(shell.id).status == "running"

    seen = bytearray()
    with sdk.processes.terminal(shell.id, replay=4096) as again:
        read_until(again, b"first-2", seen)  # the replay redraws what was there
        again.send("exit\n")
        drain(again, seen)
        assert again.exit_code == 0
    sdk.processes.delete(shell.id)


def test_terminal_refusals_are_the_sdk_errors(sdk: Client) -> None:
    with pytest.raises(NotFound):
        sdk.processes.terminal(UNKNOWN_ID)
    info = sdk.processes.create(*py("import time; time.sleep(60)"))
    with pytest.raises(Conflict, match="tty"):
        sdk.processes.terminal(info.id)
    sdk.processes.kill(info.id, wait=10)
    sdk.processes.delete(info.id)
    with Client(f"http://127.0.0.1:{free_port()}") as nowhere, pytest.raises(ConnectionFailed):
        nowhere.processes.terminal(UNKNOWN_ID)
    assert (
        sdk.processes.terminal_url("a/b", replay=10)
        == f"{sdk.url.replace('http', 'ws')}/v1/processes/a%2Fb/terminal/ws?replay=10"
    )


def test_terminal_with_a_token(server_factory: Callable[..., Server]) -> None:
    server = server_factory(token="s3cret")
    with Client(server.url, token="s3cret") as client:
        shell = client.processes.create("sh", ["-c", "read line; echo got-$line"], tty=True)
        with Client(server.url) as anonymous, pytest.raises(Unauthorized):
            anonymous.processes.terminal(shell.id)
        seen = bytearray()
        with client.processes.terminal(shell.id) as term:
            term.send("abc\n")
            read_until(term, b"got-abc", seen)
            drain(term, seen)
        assert term.exit_code == 0


# -- async ---------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def asdk(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, timeout=10) as client:
        yield client


async def read_async(term: AsyncTerminalSession, needle: bytes, seen: bytearray) -> None:
    import anyio

    with anyio.fail_after(15):
        while needle not in seen:
            data = await term.recv()
            assert data is not None, f"the process exited before {needle!r}; got {bytes(seen)!r}"
            seen += data


@pytest.mark.anyio
async def test_async_processes(asdk: AsyncClient) -> None:
    result = await asdk.processes.run(*py("print('hi')"), timeout=30)
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    config = await asdk.processes.get_config()
    assert await asdk.processes.set_config(config) == config

    info = await asdk.processes.create(*py("import sys; print(sys.stdin.readline().strip() * 2)"), interactive=True)
    assert await asdk.processes.input(info.id, "ab\n", eof=True) == 3
    assert [e.text async for e in asdk.processes.follow(info.id)] == ["abab\n"]
    assert [e.text for e in (await asdk.processes.logs(info.id)).entries] == ["abab\n"]
    assert (await asdk.processes.get(info.id)).exit_code == 0
    assert info.id in [p.id for p in await asdk.processes.list()]
    await asdk.processes.delete(info.id)

    sleeper = await asdk.processes.create(*py("import time; time.sleep(60)"))
    assert (await asdk.processes.stop(sleeper.id, wait=10)).exited
    await asdk.processes.delete(sleeper.id)


@pytest.mark.anyio
async def test_async_terminal_session(asdk: AsyncClient) -> None:
    shell = await asdk.processes.create(*BASH, env=BASH_ENV, tty=True)
    seen = bytearray()
    async with await asdk.processes.terminal(shell.id) as term:
        await term.resize(70, 10)
        await term.send("stty size\n")
        await read_async(term, b"10 70", seen)
        assert (await asdk.processes.resize(shell.id, 71, 11)).rows == 11
        await term.send(b"exit 5\n")
        async for chunk in term:
            seen += chunk
        assert term.exit_code == 5
    with pytest.raises(TerminalClosed):
        await term.send("x")
    with pytest.raises(NotFound):
        await asdk.processes.terminal(UNKNOWN_ID)
    await asdk.processes.delete(shell.id)

"""``sandbox_agent.AsyncClient`` against a real server: the twin of ``test_client.py``."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import pytest

import sandbox_agent
from conftest import Server, free_port
from sandbox_agent import AsyncClient, BadRequest, ConnectionFailed, NotFound, Unauthorized

pytestmark = pytest.mark.anyio

UNKNOWN_ID = "0" * 26
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


def argv(code: str) -> tuple[str, list[str]]:
    return sys.executable, ["-u", "-c", code]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(checked_shared_server: Server) -> Server:
    """One server per module (restart and token tests make their own)."""
    return checked_shared_server


@pytest.fixture
async def sdk(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, timeout=10) as client:
        yield client


async def kill_and_wait(client: AsyncClient, process_id: str) -> sandbox_agent.Process:
    await client.kill(process_id)
    return await client.wait(process_id, timeout=10)


async def until(lines: AsyncIterator[str], needle: str) -> None:
    async for line in lines:
        if needle in line:
            return
    raise AssertionError(f"the follow ended before {needle!r}")


async def test_every_method(sdk: AsyncClient, tmp_path: Path) -> None:
    assert (await sdk.health()).version == sandbox_agent.__version__

    code = "import os, sys; print(os.environ['GREETING']); print('oops', file=sys.stderr); sys.exit(3)"
    process = await sdk.start(*argv(code), cwd=str(tmp_path), env={"GREETING": "hello"})
    assert process.cwd == str(tmp_path)
    lines = [line async for line in sdk.follow(process.id, strip_timestamps=True)]
    assert lines == ["[stdout] hello", "[stderr] oops"]
    final = await sdk.wait(process.id, timeout=10)
    assert (final.status, final.exit_code) == ("stopped", 3)
    assert await sdk.get(process.id) == final
    assert process.id in [p.id for p in await sdk.list()]
    logs = await sdk.logs(process.id, stream="stderr", tail=5, strip_timestamps=True)
    assert (logs.content, logs.lines) == ("oops\n", 1)
    await sdk.delete(process.id)
    with pytest.raises(NotFound):
        await sdk.get(process.id)

    sleeper = await sdk.start(*argv(SLEEPER))
    async with aclosing(sdk.follow(sleeper.id)) as follow:
        await until(follow, "ready")
    with pytest.raises(TimeoutError):
        await sdk.wait(sleeper.id, timeout=0.1)
    with pytest.raises(BadRequest, match="stop or kill"):
        await sdk.delete(sleeper.id)
    await sdk.stop(sleeper.id)
    stopped = await sdk.wait(sleeper.id, timeout=10)
    assert (stopped.status, stopped.exit_signal) == ("stopped", signal.SIGTERM)

    victim = await sdk.start(*argv(SLEEPER))
    killed = await kill_and_wait(sdk, victim.id)
    assert (killed.status, killed.exit_signal) == ("killed", signal.SIGKILL)


async def test_errors(sdk: AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as not_found:
        await sdk.get(UNKNOWN_ID)
    assert UNKNOWN_ID in not_found.value.detail
    with pytest.raises(NotFound):
        async for _ in sdk.follow(UNKNOWN_ID):
            pass
    with pytest.raises(BadRequest, match="missing"):
        await sdk.start("true", cwd=str(tmp_path / "missing"))
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
        with pytest.raises(ConnectionFailed):
            await nowhere.list()
        with pytest.raises(ConnectionFailed):
            await nowhere.wait(UNKNOWN_ID)


async def test_token(server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_factory(token="s3cret")
    async with AsyncClient(server.url) as anonymous:
        with pytest.raises(Unauthorized) as missing:
            await anonymous.list()
        assert missing.value.status == 401
    monkeypatch.setenv("SANDBOX_AGENT_URL", server.url)
    monkeypatch.setenv("SANDBOX_AGENT_TOKEN", "s3cret")
    async with AsyncClient() as client:
        assert await client.list() == []


async def test_follow_resumes_after_a_crash(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory()
    gate = tmp_path / "gate"
    code = f"""
import os, time
for i in range(50): print(i)
while not os.path.exists({str(gate)!r}): time.sleep(0.01)
for i in range(50, 100): print(i)
"""
    async with AsyncClient(server.url, timeout=5) as client:
        process = await client.start(*argv(code))
        seen: list[str] = []
        restarter = threading.Thread(target=server.start)
        async with aclosing(client.follow(process.id, stream="stdout", strip_timestamps=True)) as lines:
            async for line in lines:
                seen.append(line)
                if line == "49":
                    server.crash()
                    gate.touch()  # lines 50-99 are written while no server runs
                    restarter.start()  # meanwhile the follow reconnects, with backoff
        restarter.join()
        assert seen == [str(i) for i in range(100)]
        assert (await client.wait(process.id, timeout=10)).exit_code == 0


async def test_context_manager_closes() -> None:
    async with AsyncClient() as client:
        pass
    assert client._http.is_closed

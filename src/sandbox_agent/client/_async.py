"""``AsyncClient``: the asynchronous Python SDK, on ``httpx.AsyncClient``.

The twin of ``_client.py``, method for method; what they share lives in ``_transport``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType

import anyio
import httpx

from .._exceptions import ConnectionFailed
from .._types import StreamName
from ..models import Health, Logs, Process, ProcessList
from . import _protocol

__all__ = ["AsyncClient"]


class AsyncClient:
    """Drive a sandbox-agent server: start, list, follow, wait for and stop processes.

    ``url`` defaults to ``$SANDBOX_AGENT_URL``, then ``http://127.0.0.1:2468``; ``token``
    to ``$SANDBOX_AGENT_TOKEN``. ``timeout`` (seconds, None for none) bounds each request;
    a follow may stay quiet longer between lines. Errors are ``SandboxAgentError``s:
    ``NotFound``, ``BadRequest``, ``Unauthorized``, ... and ``ConnectionFailed``.

    Usage::

        async with sandbox_agent.AsyncClient() as client:
            process = await client.start("python", ["-c", "print('hello')"])
            async for line in client.follow(process.id, strip_timestamps=True):
                print(line)  # [stdout] hello
            print((await client.wait(process.id)).exit_code)  # 0

    Break out of ``follow`` inside ``contextlib.aclosing(...)`` so that its connection
    closes at once rather than when the generator is collected.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = _protocol.DEFAULT_TIMEOUT,
        *,
        reconnect_attempts: int = _protocol.RECONNECT_ATTEMPTS,
    ) -> None:
        self.url = _protocol.resolve_url(url)
        self.reconnect_attempts = reconnect_attempts
        self._follow_timeout = _protocol.follow_timeout(timeout)
        self._http = httpx.AsyncClient(**_protocol.client_options(self.url, _protocol.resolve_token(token), timeout))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.url}>"

    # -- the API ------------------------------------------------------------------

    async def health(self) -> Health:
        """The server's status and version (needs no token)."""
        response = await self._send(_protocol.Call("GET", "/v1/health"))
        return _protocol.parse(Health, response)

    async def start(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        """Start ``command`` with ``args``; ``env`` is added over the server's environment.

        >>> (await client.start("sh", ["-c", "echo $GREETING"], env={"GREETING": "hi"})).status
        'running'
        """
        response = await self._send(_protocol.start_call(command, args, cwd, env))
        started = _protocol.parse_started(response.content)
        return started if isinstance(started, Process) else await self.get(started)

    async def list(self) -> list[Process]:
        """Every process the server knows, newest first."""
        response = await self._send(_protocol.Call("GET", "/v1/process"))
        return _protocol.parse(ProcessList, response).processes

    async def get(self, process_id: str) -> Process:
        response = await self._send(_protocol.Call("GET", _protocol.process_path(process_id)))
        return _protocol.parse(Process, response)

    async def stop(self, process_id: str) -> None:
        """Send SIGTERM (SIGKILL after the stop timeout); returns at once, see ``wait``."""
        await self._send(_protocol.Call("POST", _protocol.process_path(process_id, "stop")))

    async def kill(self, process_id: str) -> None:
        """Send SIGKILL; the status becomes ``killed``. Returns at once, see ``wait``."""
        await self._send(_protocol.Call("POST", _protocol.process_path(process_id, "kill")))

    async def delete(self, process_id: str) -> None:
        """Forget an exited process and remove its logs (``BadRequest`` while it runs)."""
        await self._send(_protocol.Call("DELETE", _protocol.process_path(process_id)))

    async def logs(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> Logs:
        """The lines logged so far (the last ``tail`` of them), in ``.content``."""
        params = _protocol.logs_params(stream, tail, strip_timestamps)
        response = await self._send(_protocol.Call("GET", _protocol.process_path(process_id, "logs"), params=params))
        return _protocol.parse(Logs, response)

    async def follow(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> AsyncIterator[str]:
        """Yield the lines logged so far (the last ``tail``), then each new one, until exit.

        Lines come as rendered (``[<ts>] [stdout] hello`` on the combined stream), with no
        newline. When the connection drops (a server restart), it reconnects and resumes
        after the last line it yielded: nothing lost, nothing repeated. It gives up with
        ``ConnectionFailed`` after ``reconnect_attempts`` failed attempts in a row.

        >>> async for line in client.follow(process.id, tail=10):
        ...     print(line)
        """
        state = _protocol.Follow(
            self.url,
            process_id,
            stream=stream,
            tail=tail,
            strip_timestamps=strip_timestamps,
            attempts=self.reconnect_attempts,
        )
        while True:
            try:
                async with self._http.stream(**state.request(self._follow_timeout)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    if state.connected(response):
                        async for line in response.aiter_lines():
                            for text in state.feed(line):
                                yield text
                            if state.done:
                                return
                delay = state.dropped(None)
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            await anyio.sleep(delay)

    # The same signature as Client.wait; anyio.fail_after around it works as well.
    async def wait(self, process_id: str, timeout: float | None = None) -> Process:  # noqa: ASYNC109
        """Block until the process has exited; return it. ``TimeoutError`` after ``timeout`` s.

        >>> (await client.wait(process.id, timeout=60)).exit_code
        0
        """
        poll = _protocol.Poll(process_id, timeout, self.reconnect_attempts)
        while True:
            try:
                process = await self.get(process_id)
            except ConnectionFailed as exc:
                poll.failed(exc)
            else:
                if poll.answered(process):
                    return process
            await anyio.sleep(poll.next_delay())

    # -- internals ----------------------------------------------------------------

    async def _send(self, call: _protocol.Call) -> httpx.Response:
        try:
            response = await self._http.request(call.method, call.path, params=call.params, json=call.json)
        except httpx.TransportError as exc:
            raise _protocol.connection_failed(self.url, exc) from exc
        return _protocol.check(response)

"""The ``/v1/processes`` routes (SPEC section 7, the original's current dialect).

Same engine, same processes as ``/v1/process`` (``routes.py``): one id space, one list,
one set of files. Routes parse, call the engine, serialize; errors are mapped by class
in ``problems.py``, in this dialect's problem types. Terminals and stdin (input, resize,
terminal WebSocket) come with the pty work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from .._exceptions import BadRequest
from ..engine import ProcessManager, Record, SpawnRequest
from ..engine.config import ProcessConfig as EngineConfig
from ..engine.logs import entries as logentries
from ..engine.run import RunRequest
from . import render, sse
from .routes import (
    _WAIT_DOC,
    _WAIT_RESPONSES,
    MAX_WAIT_MS,
    START_PROBLEMS,
    LabelFilter,
    NameFilter,
    StatusFilter,
    Until,
    WaitTimeout,
    _JSONBodyRoute,
    service_fields,
)
from .schemas import (
    CreateProcess,
    LogsStream,
    ProcessConfig,
    ProcessInfo,
    ProcessInfoList,
    ProcessLogs,
    ProcessOwner,
    RunProcess,
    RunResult,
)

router = APIRouter(prefix="/v1/processes", route_class=_JSONBodyRoute, tags=["processes (current dialect)"])

_JSON = "application/json"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request is wrong; `detail` says how (problem+json)"},
    401: {"description": "Missing or wrong bearer token (problem+json)"},
    404: {"description": "No such process (problem+json)"},
    422: {"description": "The body has the wrong shape or types (problem+json)"},
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    **_PROBLEMS,
    409: {"description": "The process is in the wrong state, or a limit is reached (problem+json)"},
}


def _manager(request: Request) -> ProcessManager:
    manager: ProcessManager = request.app.state.manager
    return manager


def _record(manager: ProcessManager, process_id: str) -> Record:
    # Any id that names no process is unknown here, whatever its shape (the original's
    # ids are proc_N; ours are 26 characters; a name works too).
    return manager.get(process_id)


def _json(data: bytes, status: int = 200) -> Response:
    return Response(data, status_code=status, media_type=_JSON)


@router.get("/config", response_model=ProcessConfig, responses=_PROBLEMS)
async def get_config(request: Request) -> Response:
    """The limits of this dialect."""
    return _json(render.process_config(_manager(request).config))


@router.post("/config", response_model=ProcessConfig, responses=_PROBLEMS)
async def set_config(body: ProcessConfig, request: Request) -> Response:
    """Replace all six limits; they are kept across restarts of the server (extension).

    A default run timeout above the max is lowered to the max, as the original does.
    """
    config = EngineConfig(
        max_concurrent_processes=body.max_concurrent_processes,
        default_run_timeout_ms=body.default_run_timeout_ms,
        max_run_timeout_ms=body.max_run_timeout_ms,
        max_output_bytes=body.max_output_bytes,
        max_log_bytes_per_process=body.max_log_bytes_per_process,
        max_input_bytes_per_request=body.max_input_bytes_per_request,
    )
    stored = await _manager(request).set_config(config)
    return _json(render.process_config(stored))


@router.post("", response_model=ProcessInfo, responses={**START_PROBLEMS, **_CONFLICT})
async def create_process(body: CreateProcess, request: Request) -> Response:
    """Start a process; answers once it runs. 409 past maxConcurrentProcesses running."""
    manager = _manager(request)
    size = body.terminal_size
    record = await manager.spawn(
        SpawnRequest(
            command=body.command,
            args=body.args,
            cwd=body.cwd,
            env=body.env,
            tty=body.tty,
            interactive=body.interactive,
            terminal_size=None if size is None else (size.cols, size.rows),
            max_log_bytes=body.max_log_bytes,
            **service_fields(body),
        ),
        max_running=manager.config.max_concurrent_processes,
    )
    return _json(render.process_info(record))


@router.post("/run", response_model=RunResult, responses=_PROBLEMS)
async def run_process(body: RunProcess, request: Request) -> Response:
    """Run a command to its end (or its timeout) and answer with its output.

    stdin is /dev/null; on timeout the whole process group is killed. Not recorded as a
    process.
    """
    result = await _manager(request).run(
        RunRequest(command=body.command, args=body.args, cwd=body.cwd, env=body.env),
        timeout_ms=body.timeout_ms,
        max_output_bytes=body.max_output_bytes,
    )
    return _json(render.run_result(result))


@router.get("", response_model=ProcessInfoList, responses=_PROBLEMS)
async def list_processes(
    request: Request,
    owner: Annotated[ProcessOwner | None, Query(description="Only the processes of this owner")] = None,
    status: StatusFilter = None,
    label: LabelFilter = None,
    name: NameFilter = None,
) -> Response:
    """Every process, oldest first (the original sorts by id; ours sort by creation);
    extension: only those matching every filter given."""
    if owner is not None and owner != "user":
        return _json(b'{"processes":[]}')
    manager = _manager(request)
    if status is None and not label and name is None:
        return _json(render.process_info_list(reversed(manager.processes())))
    return _json(render.process_info_list(reversed(manager.select(status=status, labels=label or (), name=name))))


async def _wait_exit(manager: ProcessManager, process_id: str, wait_ms: int) -> Record:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_ms / 1000):
            await manager.wait(process_id)
    return manager.get(process_id)


_WAIT_MS = "Wait up to this long for the exit before answering"
_MAX_WAIT_MS = MAX_WAIT_MS


@router.get("/{process_id}", response_model=ProcessInfo, responses=_PROBLEMS)
async def get_process(
    process_id: str,
    request: Request,
    wait_ms: Annotated[
        int,
        Query(
            alias="waitMs",
            ge=0,
            le=_MAX_WAIT_MS,
            description="Extension: wait up to this long for the process to exit before answering "
            "(0, the default, answers at once). A blocking wait costs one request where polling costs many.",
        ),
    ] = 0,
) -> Response:
    manager = _manager(request)
    record = _record(manager, process_id)
    if wait_ms and not record.exited:
        record = await _wait_exit(manager, process_id, wait_ms)
    return _json(render.process_info(record))


@router.get("/{process_id}/wait", response_model=ProcessInfo, responses=_WAIT_RESPONSES, description=_WAIT_DOC)
async def wait_process(
    process_id: str, request: Request, until: Until = "exit", timeout_ms: WaitTimeout = 30_000
) -> Response:
    return _json(render.process_info(await _manager(request).wait_until(process_id, until, timeout_ms)))


@router.delete("/{process_id}", status_code=204, responses=_CONFLICT)
async def delete_process(process_id: str, request: Request) -> Response:
    """Remove an exited process's record and its logs; 409 while it runs."""
    manager = _manager(request)
    _record(manager, process_id)
    await manager.delete(process_id)
    return Response(status_code=204)


@router.post("/{process_id}/stop", response_model=ProcessInfo, responses=_PROBLEMS)
async def stop_process(
    process_id: str,
    request: Request,
    wait_ms: Annotated[int, Query(alias="waitMs", ge=0, description=_WAIT_MS)] = 2000,
) -> Response:
    """SIGTERM to the process group (SIGKILL after its stop timeout); the process as it
    is once exited, or after ``waitMs``."""
    manager = _manager(request)
    _record(manager, process_id)
    manager.stop(process_id)
    return _json(render.process_info(await _wait_exit(manager, process_id, wait_ms)))


@router.post("/{process_id}/kill", response_model=ProcessInfo, responses=_PROBLEMS)
async def kill_process(
    process_id: str,
    request: Request,
    wait_ms: Annotated[int, Query(alias="waitMs", ge=0, description=_WAIT_MS)] = 1000,
) -> Response:
    """SIGKILL to the process group; the process as it is once exited, or after ``waitMs``."""
    manager = _manager(request)
    _record(manager, process_id)
    manager.kill(process_id)
    return _json(render.process_info(await _wait_exit(manager, process_id, wait_ms)))


@router.post("/{process_id}/restart", response_model=ProcessInfo, responses=_CONFLICT)
async def restart_process(process_id: str, request: Request) -> Response:
    """Extension: end the current run as a stop would and start the command again at once under the same
    process (`restarts` + 1), policy or not; the process once the new run started. 409 once exited, or with
    tty or interactive."""
    return _json(render.process_info(await _manager(request).restart(process_id)))


@router.get(
    "/{process_id}/logs",
    response_model=ProcessLogs,
    responses={
        **_CONFLICT,
        200: {
            "description": "The entries; with follow=true a text/event-stream of `log` events "
            "(id: the sequence), then an `exit` event once the process exited. Extension: an `event: gap` "
            'with data `{"from": sequence, "to": sequence}` when entries after `since` were dropped from a '
            "capped log (see maxLogBytes); the stream goes on at the oldest entry kept",
            "content": {"text/event-stream": {}},
        },
    },
)
async def process_logs(
    process_id: str,
    request: Request,
    stream: Annotated[
        LogsStream | None, Query(description="combined (stdout + stderr), stdout, stderr or pty; default pty for a tty")
    ] = None,
    tail: Annotated[int | None, Query(ge=0, description="Only the last N entries")] = None,
    since: Annotated[int | None, Query(ge=0, description="Only entries after this sequence")] = None,
    # Only the words true and false, as the original (a bool here would take 1, yes, on).
    follow: Annotated[
        Literal["true", "false"], Query(description="Stream the entries as Server-Sent Events")
    ] = "false",
    last_event_id: Annotated[str | None, Header(description="Same as since (the larger wins)")] = None,
) -> Response:
    """A process's output as entries: one per line, numbered across its streams."""
    manager = _manager(request)
    record = _record(manager, process_id)
    after = since or 0
    if last_event_id is not None:
        value = last_event_id.strip()
        if not value.isdigit():
            raise BadRequest(
                f"Last-Event-ID {last_event_id!r} is not a sequence number; send the id of the last event "
                "received, or no Last-Event-ID"
            )
        after = max(after, int(value))
    if follow == "false":
        effective, found = await manager.entries(process_id, stream=stream, since=after, tail=tail)
        return _json(render.log_entries(record.id, effective, found))
    effective, events = await manager.follow_entries(process_id, stream=stream, since=after, tail=tail)
    return StreamingResponse(
        _sse(events, effective, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(events: AsyncIterator[logentries.FollowEvent], stream: str, after: int) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, logentries.Batch):
                data = sse.entry_events(event, stream, after)
                if data:
                    yield data
            elif isinstance(event, logentries.Entries):
                yield sse.log_events(event.entries)
            elif isinstance(event, logentries.Skipped):
                yield sse.gap_event(event.after, event.last)
            elif isinstance(event, logentries.Ended):
                yield b"id: %d\nevent: exit\ndata: %s\n\n" % (event.last_line, render.exit_data(event.state))
            else:
                yield sse.KEEPALIVE

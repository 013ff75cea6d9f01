"""The ``/v1`` routes: parse, call the engine, serialize. No process logic here."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response, StreamingResponse

from .._exceptions import BadRequest
from .._types import StreamName
from .._version import __version__
from ..engine import ProcessManager, SpawnRequest
from ..engine.logs.store import PIECE_BYTES
from ..engine.services import RestartPolicy, WaitFor
from . import render, sse
from .schemas import Health, Logs, Process, ProcessList, StartProcess, _Service


class _JSONBodyRoute(APIRoute):
    """Read a request body as JSON whatever its Content-Type says.

    ``curl -d '{"command": "ls"}'`` sends form encoding by default; the body is JSON all
    the same, and a caller is better served by running it than by a type error.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if request.method == "POST" and "json" not in content_type:
                headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                request = Request({**request.scope, "headers": headers}, request.receive)
            return await handler(request)

        return handle


#: An event id is a byte offset: ASCII digits (str.isdigit also takes "²"), at most 19 of them.
_EVENT_ID = re.compile(r"[0-9]{1,19}")

router = APIRouter(prefix="/v1", route_class=_JSONBodyRoute)

_JSON = "application/json"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request is wrong; `detail` says how (problem+json)"},
    401: {"description": "Missing or wrong bearer token (problem+json)"},
    404: {"description": "No such process (problem+json)"},
}


def _manager(request: Request) -> ProcessManager:
    manager: ProcessManager = request.app.state.manager
    return manager


def service_fields(body: _Service) -> dict[str, Any]:
    """The ``SpawnRequest`` fields of a start body's services extension (SPEC section 8)."""
    wait_for = body.wait_for
    restart = body.restart
    return {
        "name": body.name,
        "labels": body.labels,
        "wait_for": None
        if wait_for is None
        else WaitFor(wait_for.port, wait_for.log_pattern, wait_for.http_get, wait_for.timeout_ms),
        "restart": None if restart is None else RestartPolicy(restart.policy, restart.max_restarts, restart.backoff_ms),
    }


#: The longest blocking wait a GET may ask for (a client waits longer by asking again).
MAX_WAIT_MS = 300_000
_WAIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "until=ready for a process started without waitFor (problem+json)"},
    401: {"description": "Missing or wrong bearer token (problem+json)"},
    404: {"description": "No such process (problem+json)"},
}
_WAIT_DOC = (
    "Extension: answers with the process once it has exited (until=exit) or is ready (until=ready: it was "
    "started with waitFor; an exit ends that wait too), or with the process as it is when timeoutMs has passed: "
    "check status and ready. Same as GET /v1/processes/{id}?waitMs= for until=exit."
)
Until = Annotated[Literal["exit", "ready"], Query(description="exit (the default) or ready")]
WaitTimeout = Annotated[
    int, Query(alias="timeoutMs", ge=0, le=MAX_WAIT_MS, description="Give up after this long (default 30000)")
]
#: A list filter on status: running (also starting), exited, or a status of either dialect.
StatusFilter = Annotated[
    Literal["running", "exited", "starting", "stopped", "killed"] | None,
    Query(description="Extension: running, exited (or stopped, killed)"),
]
LabelFilter = Annotated[
    list[str] | None,
    Query(
        description="Extension: key=value (or key: has the label); repeat for all of them. Empty: no filter",
    ),
]
NameFilter = Annotated[str | None, Query(description="Extension: every process that has this name. Empty: no filter")]


@router.get("/health", response_model=Health, tags=["server"])
async def health() -> Health:
    return Health(status="ok", version=__version__)


#: Extension (services): a start's name clash, and its readiness timeout.
START_PROBLEMS: dict[int | str, dict[str, Any]] = {
    409: {"description": "Extension: a running process already has that name (problem+json)"},
    504: {
        "description": "Extension: waitFor did not hold within waitFor.timeoutMs; the process was left running "
        "(problem+json)"
    },
}


@router.post(
    "/process", status_code=201, response_model=Process, responses={**_PROBLEMS, **START_PROBLEMS}, tags=["processes"]
)
async def start_process(body: StartProcess, request: Request) -> Response:
    """Start a process. Returns once it runs, with its id and log paths; extension: with
    waitFor, once it is ready (or exited), 504 past waitFor.timeoutMs (left running)."""
    process = await _manager(request).spawn(
        SpawnRequest(
            command=body.command,
            args=body.args,
            cwd=body.cwd,
            env=body.env,
            stop_timeout=body.stop_timeout,
            tty=body.tty,
            interactive=body.interactive,
            terminal_size=None if body.terminal_size is None else (body.terminal_size.cols, body.terminal_size.rows),
            max_log_bytes=body.max_log_bytes,
            **service_fields(body),
        )
    )
    return Response(
        render.process_v1(process),
        status_code=201,
        media_type=_JSON,
        headers={"Location": f"/v1/process/{process.id}"},
    )


@router.get("/process", response_model=ProcessList, responses=_PROBLEMS, tags=["processes"])
async def list_processes(
    request: Request, status: StatusFilter = None, label: LabelFilter = None, name: NameFilter = None
) -> Response:
    """Every process, newest first; extension: only those matching every filter given."""
    manager = _manager(request)
    if status is None and not label and name is None:
        return Response(render.process_list_v1(manager.processes()), media_type=_JSON)
    records = manager.select(status=status, labels=label or (), name=name)
    return Response(render.process_list_v1(records), media_type=_JSON)


@router.get("/process/{process_id}", response_model=Process, responses=_PROBLEMS, tags=["processes"])
async def get_process(process_id: str, request: Request) -> Response:
    return Response(render.process_v1(_manager(request).get(process_id)), media_type=_JSON)


@router.get(
    "/process/{process_id}/wait",
    response_model=Process,
    responses=_WAIT_RESPONSES,
    tags=["processes"],
    description=_WAIT_DOC,
)
async def wait_process(
    process_id: str, request: Request, until: Until = "exit", timeout_ms: WaitTimeout = 30_000
) -> Response:
    return Response(
        render.process_v1(await _manager(request).wait_until(process_id, until, timeout_ms)), media_type=_JSON
    )


@router.post("/process/{process_id}/stop", status_code=204, responses=_PROBLEMS, tags=["processes"])
async def stop_process(process_id: str, request: Request) -> Response:
    """SIGTERM to the process group (SIGKILL after its stop timeout). No-op once exited."""
    _manager(request).stop(process_id)
    return Response(status_code=204)


@router.post("/process/{process_id}/kill", status_code=204, responses=_PROBLEMS, tags=["processes"])
async def kill_process(process_id: str, request: Request) -> Response:
    """SIGKILL to the process group; its status becomes `killed`. No-op once exited."""
    _manager(request).kill(process_id)
    return Response(status_code=204)


@router.post(
    "/process/{process_id}/restart",
    response_model=Process,
    responses={**_PROBLEMS, 409: {"description": "The process has exited, or has tty or interactive (problem+json)"}},
    tags=["processes"],
)
async def restart_process(process_id: str, request: Request) -> Response:
    """Extension: end the current run as a stop would (SIGTERM, SIGKILL after the stop timeout) and start the
    command again at once under the same process (same id, logs and restart policy, `restarts` + 1), with or
    without a restart policy. Answers with the process once the new run started (or after the stop timeout
    and 5 s more)."""
    return Response(render.process_v1(await _manager(request).restart(process_id)), media_type=_JSON)


@router.delete("/process/{process_id}", status_code=204, responses=_PROBLEMS, tags=["processes"])
async def delete_process(process_id: str, request: Request) -> Response:
    """Remove an exited process's record and its logs."""
    await _manager(request).delete(process_id)
    return Response(status_code=204)


@router.get(
    "/process/{process_id}/logs",
    response_model=Logs,
    responses={
        **_PROBLEMS,
        200: {
            "description": "The selected lines; with follow=true a text/event-stream: a snapshot event, "
            "one event per new line, then an `exit` event. Extension: an `event: gap` with data "
            '`{"from": id, "to": id}` when lines after the resume point were dropped from a capped log '
            "(see maxLogBytes); the stream goes on at the oldest line kept",
            "content": {"text/event-stream": {}},
        },
    },
    tags=["processes"],
)
async def process_logs(
    process_id: str,
    request: Request,
    stream: Annotated[StreamName, Query(description="combined, stdout or stderr")] = "combined",
    tail: Annotated[int | None, Query(ge=0, description="Only the last N lines")] = None,
    strip_timestamps: Annotated[bool | None, Query(description="Drop the leading [timestamp]")] = None,
    strip_timestamps_camel: Annotated[bool | None, Query(alias="stripTimestamps", include_in_schema=False)] = None,
    follow: Annotated[bool, Query(description="Stream new lines as Server-Sent Events")] = False,
    last_event_id: Annotated[
        str,
        Header(
            description="Resume a follow after this event id (empty: no id yet)",
            # Documented here, checked below with a message that says what to send.
            json_schema_extra={"pattern": "^[0-9]{0,19}$"},
        ),
    ] = "",
) -> Response:
    strip = bool(strip_timestamps if strip_timestamps is not None else strip_timestamps_camel)
    manager = _manager(request)
    if not follow:
        reader = await manager.open_log(process_id, stream=stream, tail=tail, strip=strip)
        if reader.size <= PIECE_BYTES:
            try:
                content = reader.next() or ""
            finally:
                reader.close()
            return Response(render.logs_v1(content, reader.lines), media_type=_JSON)
        # A large log streams out in pieces, read off the event loop: the server holds one
        # piece per request whatever the size, and the answer is the same JSON object.
        return StreamingResponse(render.logs_v1_stream(reader), media_type=_JSON)
    resume_from = None
    # An empty Last-Event-ID is how an SSE client says it has no id yet.
    if last_event_id.strip():
        if not _EVENT_ID.fullmatch(last_event_id.strip()):
            raise BadRequest(f"Last-Event-ID {last_event_id[:40]!r} is not an event id of this stream (a number)")
        resume_from = int(last_event_id)
    events = await manager.follow(process_id, stream=stream, tail=tail, resume_from=resume_from)
    return StreamingResponse(
        sse.render(events, strip),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

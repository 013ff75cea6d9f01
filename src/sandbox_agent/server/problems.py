"""Every error the API returns is ``application/problem+json`` (RFC 9457), mapped here.

Domain errors map by class (``ProblemError.status``); framework errors (bad JSON, wrong
types, unknown routes) are reworded into plain sentences. Nothing else reaches a client:
an unexpected exception becomes a 500 whose detail says nothing of the internals, and
its traceback goes to the server's log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .._exceptions import ProblemError
from ..engine.manager import ProcessRunning

logger = logging.getLogger("sandbox_agent.server")

PROBLEM_TYPE = "application/problem+json"

# What to say about a parameter that failed validation, by where it was.
_HINTS = {
    ("query", "tail"): "tail must be a whole number, 0 or more (omit it for everything)",
    ("query", "stream"): "stream must be one of combined, stdout or stderr (and pty on /v1/processes)",
    ("query", "since"): "since must be a sequence number, 0 or more",
    ("query", "waitMs"): "waitMs must be a whole number of milliseconds, 0 or more",
    ("query", "owner"): "owner must be one of user, desktop or system",
    ("query", "follow"): "follow must be true or false",
    ("query", "strip_timestamps"): "strip_timestamps must be true or false",
    ("query", "stripTimestamps"): "stripTimestamps must be true or false",
    ("query", "status"): "status must be one of running, exited, starting, stopped or killed",
    ("query", "until"): "until must be exit or ready",
    ("query", "timeoutMs"): "timeoutMs must be a whole number of milliseconds, 0 to 300000",
    ("query", "dialect"): "dialect must be process or processes",
}


#: The ``/v1/processes`` dialect speaks the original's problem types and titles.
PROCESSES_PREFIX = "/v1/processes"
_URN = "urn:sandbox-agent:error:"
#: status -> (kind, title), as the original answers them on /v1/processes.
_PROCESSES_KINDS = {
    400: ("invalid_request", "Invalid Request"),
    401: ("token_invalid", "Token Invalid"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not Found"),
    405: ("invalid_request", "Method Not Allowed"),
    409: ("conflict", "Conflict"),
    413: ("invalid_request", "Payload Too Large"),
    422: ("invalid_request", "Unprocessable Entity"),
    503: ("service_unavailable", "Service Unavailable"),
    504: ("timeout", "Gateway Timeout"),
    507: ("insufficient_storage", "Insufficient Storage"),
}
#: Domain errors whose status differs on /v1/processes, by class.
_PROCESSES_STATUS: dict[type[ProblemError], int] = {ProcessRunning: 409}


def is_processes_path(path: str) -> bool:
    return path == PROCESSES_PREFIX or path.startswith(PROCESSES_PREFIX + "/")


def body(path: str, status: int, title: str, detail: str, *, kind: str | None = None) -> bytes:
    """A problem+json body in the dialect of ``path``; ``kind`` overrides the one of ``status``."""
    problem_type = "about:blank"
    if is_processes_path(path):
        default_kind, title = _PROCESSES_KINDS.get(status, ("internal", title))
        problem_type = _URN + (kind or default_kind)
    return json.dumps({"type": problem_type, "title": title, "status": status, "detail": detail}).encode()


def problem(
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    *,
    path: str = "",
    kind: str | None = None,
) -> Response:
    return Response(
        body(path, status, title, detail, kind=kind), status_code=status, media_type=PROBLEM_TYPE, headers=headers
    )


def domain_problem(exc: ProblemError, path: str) -> Response:
    """The answer to a domain error raised while serving ``path``."""
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    status = exc.status
    if is_processes_path(path):
        status = next((s for cls, s in _PROCESSES_STATUS.items() if isinstance(exc, cls)), status)
    return problem(status, exc.title, exc.detail, headers=headers, path=path)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    sentences = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "")
        hint = _HINTS.get(loc[:2]) if len(loc) >= 2 else None
        if kind == "json_invalid":
            sentences.append(f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})")
        elif loc == ("body",) and kind in ("dict_type", "model_attributes_type"):
            sentences.append('the request body must be a JSON object, for example {"command": "echo", "args": ["hi"]}')
        elif loc == ("body",) and kind == "missing":
            sentences.append("the request needs a JSON body; /openapi.json gives its fields")
        elif hint is not None:
            sentences.append(f"{hint}; got {error.get('input')!r}")
        else:
            where = ".".join(str(part) for part in loc[1:]) or "body"
            sentences.append(f"{where}: {error.get('msg', 'is not valid')}")
    return "; ".join(sentences) + "."


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path, as the OpenAPI document lists them.

    Starlette names only the first route's methods; and ``/v1/processes/config`` also
    matches ``/v1/processes/{process_id}``, so the most specific template (the most
    literal segments) is the resource.
    """
    segments = request.url.path.strip("/").split("/")
    best: tuple[int, list[str]] = (-1, [])
    for template, operations in request.app.openapi().get("paths", {}).items():
        parts = template.strip("/").split("/")
        if len(parts) != len(segments):
            continue
        if all(part.startswith("{") or part == segment for part, segment in zip(parts, segments, strict=True)):
            literal = sum(not part.startswith("{") for part in parts)
            if literal > best[0]:
                best = (literal, sorted(method.upper() for method in operations))
    methods = best[1]
    if "GET" in methods:
        methods = sorted({*methods, "HEAD"})  # Starlette answers HEAD wherever it answers GET
    return methods


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _domain(request: Request, exc: ProblemError) -> Response:
        return domain_problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        path = request.url.path
        errors = exc.errors()
        status = 400
        # The original answers a body of the wrong shape with 422 (a body that is not
        # JSON, or a bad query, with 400); we keep its codes, in problem+json.
        if is_processes_path(path) and any(
            tuple(e.get("loc", ()))[:1] == ("body",) and e.get("type") != "json_invalid" for e in errors
        ):
            status = 422
        return problem(status, "Bad Request", describe_validation_errors(errors), path=path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            detail = f"there is no {request.url.path}; the API lives under /v1 (see /openapi.json)"
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            detail = (
                f"{request.method} is not allowed on {request.url.path}; it takes {', '.join(allowed)} "
                "(see /openapi.json)"
            )
            headers = {"Allow": ", ".join(allowed)}
            return problem(405, "Method Not Allowed", detail, headers=headers, path=request.url.path)
        else:
            detail = str(exc.detail)
        title = {404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}.get(exc.status_code, "Error")
        # An unknown route is a wrong request, not a missing process (the original's kind).
        return problem(
            exc.status_code,
            title,
            detail,
            headers=getattr(exc, "headers", None),
            path=request.url.path,
            kind="invalid_request",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return unexpected(request.method, request.url.path)


def unexpected(method: str, path: str) -> Response:
    """The 500 for the exception being handled: its traceback goes to the log, not to the client."""
    logger.exception("unexpected error on %s %s", method, path)
    return problem(
        path=path,
        status=500,
        title="Internal Server Error",
        detail="the server failed to handle this request; the cause is in the server's log. Try again, "
        "and report it if it persists.",
    )

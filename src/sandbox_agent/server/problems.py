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
from starlette.routing import Match

from .._exceptions import ProblemError

logger = logging.getLogger("sandbox_agent.server")

PROBLEM_TYPE = "application/problem+json"

# What to say about a parameter that failed validation, by where it was.
_HINTS = {
    ("query", "tail"): "tail must be a whole number of lines, 0 or more (omit it for every line)",
    ("query", "stream"): "stream must be one of combined, stdout or stderr",
    ("query", "follow"): "follow must be true or false",
    ("query", "strip_timestamps"): "strip_timestamps must be true or false",
    ("query", "stripTimestamps"): "stripTimestamps must be true or false",
}


def problem(status: int, title: str, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


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
            sentences.append('the request needs a JSON body, for example {"command": "echo", "args": ["hi"]}')
        elif hint is not None:
            sentences.append(f"{hint}; got {error.get('input')!r}")
        else:
            where = ".".join(str(part) for part in loc[1:]) or "body"
            sentences.append(f"{where}: {error.get('msg', 'is not valid')}")
    return "; ".join(sentences) + "."


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path (Starlette names only the first route's)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _domain(request: Request, exc: ProblemError) -> Response:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return problem(exc.status, exc.title, exc.detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return problem(400, "Bad Request", describe_validation_errors(exc.errors()))

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
            return problem(405, "Method Not Allowed", detail, headers={"Allow": ", ".join(allowed)})
        else:
            detail = str(exc.detail)
        title = {404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "Internal Server Error",
            "the server failed to handle this request; the cause is in the server's log. Try again, "
            "and report it if it persists.",
        )

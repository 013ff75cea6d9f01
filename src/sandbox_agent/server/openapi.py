"""The OpenAPI document, made true to what the server sends.

FastAPI documents a 422 for every route with parameters, which ``/v1/process`` never
sends (validation errors are 400 problems there; ``/v1/processes`` answers a body of the
wrong shape with 422, as the original does), and leaves error responses without a body schema.
Here every 4xx/5xx response gets the ``Problem`` schema under ``application/problem+json``,
every operation that takes a body documents the 413 of the body limit, and the 422s go.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .schemas import Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_CONTENT = {"application/problem+json": {"schema": _PROBLEM_REF}}
_DEFAULT_DESCRIPTIONS = {
    "400": "The request is wrong; `detail` says how",
    "401": "Missing or wrong bearer token",
    "403": "A cross-origin request, or a host name the server does not answer to",
    "413": "The request body is too large",
    "500": "The server failed; the cause is in its log",
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _true_to_the_wire(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _true_to_the_wire(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema()
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if path.startswith("/v1/processes") and "requestBody" in operation:
                # This dialect answers a body of the wrong shape with 422, as the original does.
                responses["422"] = {"description": "The body does not have the documented shape"}
            else:
                responses.pop("422", None)
            for code in ("401", "403", "500"):
                responses.setdefault(code, {})
            if "requestBody" in operation or operation.get("parameters"):
                responses.setdefault("400", {})
            if "requestBody" in operation:
                responses.setdefault("413", {})
            for code, response in responses.items():
                if code[0] in "45":
                    response.setdefault("description", _DEFAULT_DESCRIPTIONS.get(code, "An error"))
                    response["content"] = _PROBLEM_CONTENT
    return document

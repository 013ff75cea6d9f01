"""The ASGI application: routes, errors, auth, CORS and the inspector's files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .._version import __version__
from ..engine import ProcessManager
from . import openapi, problems
from .auth import Bearer, BrowserGuard, BrowserPolicy, TokenAuth
from .events import router as events_router
from .fastlane import FastLane
from .limits import MAX_BODY_BYTES, BodyLimit
from .processes import router as processes_router
from .routes import router
from .terminal import router as terminal_router

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

#: The inspector loads nothing from elsewhere; say so, so a browser enforces it.
_UI_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class _UIFiles(StaticFiles):
    """The inspector's files: revalidated on every load, under a strict CSP.

    Installed files carry fixed modification times, so without ``no-cache`` a browser
    could keep an old script after an upgrade.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = _UI_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def create_app(
    manager: ProcessManager,
    *,
    token: str | None = None,
    cors_origins: list[str] | None = None,
    loopback_only: bool = True,
    manage_lifecycle: bool = True,
) -> FastLane:
    """The API over ``manager``, an ASGI application: the fast lane in front of the FastAPI
    application (its ``app``). Starts and closes ``manager`` unless ``manage_lifecycle`` is off.

    ``loopback_only``: the server listens on loopback only, so without a token it
    answers only to loopback host names (see ``BrowserGuard``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await manager.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await manager.close()

    app = FastAPI(
        title="sandbox-agent",
        version=__version__,
        description="Manage the background processes of a sandbox over HTTP.",
        lifespan=lifespan,
        # FastAPI's docs page loads Swagger UI from a CDN, on the API's own origin: none.
        docs_url=None,
        redoc_url=None,
    )
    app.state.manager = manager
    problems.install(app)
    openapi.install(app)
    app.include_router(router)
    app.include_router(processes_router)
    app.include_router(terminal_router)
    app.include_router(events_router)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:
        return RedirectResponse("/ui/")

    app.mount("/ui", _UIFiles(directory=UI_DIR, html=True), name="ui")
    bearer = Bearer(token)
    policy = BrowserPolicy(allowed_origins=list(cors_origins or []), check_host=token is None and loopback_only)
    app.add_middleware(TokenAuth, bearer=bearer)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(BrowserGuard, policy=policy)
    if cors_origins:
        # Added last, so outermost: a 401 still carries the CORS headers a browser needs.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Content-Type"],
        )
    return FastLane(app, manager, bearer, policy)

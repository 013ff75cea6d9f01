"""Driving the inspector in Debian's Chromium: launch options, a page that records what it
asks for and what it complains about, and keyboard helpers."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, sync_playwright

from conftest import Server, wait_exited

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL = re.compile(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/")
# What Chromium itself prints when a request fails (a 401, a refused connection, a stream
# cut by a server restart, a WebSocket refused while the server is away). Tests that provoke
# those on purpose allow exactly these.
NETWORK_FAILURE = re.compile(
    r"^(Failed to load resource: |WebSocket connection to 'wss?://127\.0\.0\.1:\d+/[^']*' failed: )"
)
TIMESTAMP = re.compile(r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\]")


@dataclass
class Recorder:
    """Every request a page makes and every console error or uncaught exception."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allow_network_failures: bool = False

    def on_request(self, request: Request) -> None:
        self.requests.append((request.method, request.url, request.headers))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console.{message.type}: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")

    def api_requests(self, needle: str = "/v1/") -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if needle in r[1]]

    def check(self) -> None:
        """No request left the machine, and nothing went to the console unexpectedly."""
        remote = [url for _, url, _ in self.requests if not LOCAL.match(url) and not url.startswith("data:")]
        assert not remote, f"requests off the machine: {remote}"
        errors = [
            e for e in self.errors if not (self.allow_network_failures and NETWORK_FAILURE.match(e.split(": ", 1)[1]))
        ]
        assert not errors, f"console errors: {errors}"


class Pages:
    """Fresh browser contexts for one test, each page recorded; checked and closed after."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[tuple[BrowserContext, Recorder]] = []

    def open(
        self, url: str, *, width: int = 1280, height: int = 900, before: Callable[[Page], None] | None = None
    ) -> tuple[Page, Recorder]:
        """``before`` is called with the page before it loads (to install a clock, say)."""
        context = self.browser.new_context(viewport={"width": width, "height": height})
        recorder = Recorder()
        # Anything not for this machine is refused as well as recorded: nothing can leak.
        context.route(re.compile(r"^(?!(https?|wss?)://127\.0\.0\.1[:/]|data:)"), lambda route: route.abort())
        self.contexts.append((context, recorder))
        page = context.new_page()
        page.on("request", recorder.on_request)
        page.on("console", recorder.on_console)
        page.on("pageerror", recorder.on_page_error)
        if before is not None:
            before(page)
        page.goto(url)
        return page, recorder

    def close(self) -> None:
        failures = []
        for context, recorder in self.contexts:
            try:
                recorder.check()
            except AssertionError as exc:
                failures.append(str(exc))
            finally:
                context.close()
        assert not failures, "; ".join(failures)


FOCUSED_NAME = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return "";
  const label = el.labels && el.labels.length ? el.labels[0].textContent : "";
  return (el.getAttribute("aria-label") || label || el.textContent || "").trim().replace(/\\s+/g, " ");
}"""


def tab_to(page: Page, name: str | re.Pattern[str], *, limit: int = 80, backwards: bool = False) -> list[str]:
    """Press Tab until the focused element is called ``name``; return every name passed."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        current: str = page.evaluate(FOCUSED_NAME)
        seen.append(current)
        matched = bool(name.search(current)) if isinstance(name, re.Pattern) else current == name
        if matched:
            return seen
    raise AssertionError(f"{name!r} not reached with the keyboard; focus went through {seen}")


def at_bottom(page: Page, selector: str) -> bool:
    result: bool = page.eval_on_selector(selector, "e => e.scrollTop + e.clientHeight >= e.scrollHeight - 9")
    return result


# ---- fixtures, imported by the browser test modules ------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    opened.close()


Servers = Callable[..., tuple[Server, httpx.Client]]


@pytest.fixture
def servers(server_factory: Callable[..., Server]) -> Iterator[Servers]:
    """Start a server and a client for it; afterwards, kill whatever still runs on it."""
    made: list[tuple[Server, httpx.Client]] = []

    def make(token: str | None = None) -> tuple[Server, httpx.Client]:
        server = server_factory(token=token)
        client = server.client()
        made.append((server, client))
        return server, client

    yield make
    for server, client in made:
        try:
            if server.proc is not None:
                for process in client.get("/v1/process").json()["processes"]:
                    if process["status"] not in ("stopped", "killed"):
                        client.post(f"/v1/process/{process['id']}/kill")
                        wait_exited(client, process["id"])
        finally:
            client.close()

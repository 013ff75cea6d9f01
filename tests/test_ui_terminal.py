"""Terminals in the inspector, driven in Debian's Chromium against a real server: a shell
typed into, resized, a curses program, a server restart under an open terminal, and an
interactive process fed line by line.

The screen is read through xterm's own buffer API (the Terminal object is on its host
element); every wait is for something on that screen, with a deadline.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import ui_helpers
from conftest import wait_exited
from ui_helpers import Pages, Servers

pytestmark = pytest.mark.browser

# The fixtures every browser test module uses, from one place.
browser, pages, servers = ui_helpers.browser, ui_helpers.pages, ui_helpers.servers

HOST = ".term-host"
SCREEN = """(sel) => {
  const term = document.querySelector(sel).terminal;
  if (!term) return "";
  const buffer = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines.join("\\n");
}"""
CURSES = """
import curses

def draw(screen):
    screen.clear()
    rows, cols = screen.getmaxyx()
    screen.addstr(0, 0, "curses ready", curses.color_pair(1) | curses.A_BOLD)
    screen.addstr(rows - 1, 0, f"size {rows}x{cols}; press q")
    screen.refresh()

def main(screen):
    curses.start_color()
    curses.init_pair(1, curses.COLOR_GREEN, curses.COLOR_BLACK)
    draw(screen)
    while (key := screen.getch()) != ord("q"):
        if key == curses.KEY_RESIZE:
            draw(screen)

curses.wrapper(main)
print("curses done")
"""


def row(page: Page, process_id: str) -> Any:
    return page.locator(f'li.proc[data-id="{process_id}"]')


def screen(page: Page) -> str:
    text: str = page.evaluate(SCREEN, HOST)
    return text


def wait_screen(page: Page, pattern: str, timeout: float = 10_000) -> None:
    """Wait until a line of the terminal's screen (scrollback included) matches ``pattern``."""
    try:
        page.wait_for_function(
            "([sel, pattern]) => { const t = document.querySelector(sel)?.terminal; if (!t) return false;"
            " const b = t.buffer.active; const re = new RegExp(pattern);"
            " for (let i = 0; i < b.length; i++) if (re.test(b.getLine(i).translateToString(true))) return true;"
            " return false; }",
            arg=[HOST, pattern],
            timeout=timeout,
        )
    except Exception as exc:
        raise AssertionError(f"{pattern!r} never showed on the terminal; it shows:\n{screen(page)}") from exc


def wait_state(page: Page, state: str, timeout: float = 10_000) -> None:
    page.wait_for_function(
        "([sel, state]) => document.querySelector(sel)?.dataset.state === state", arg=[HOST, state], timeout=timeout
    )


def term_size(page: Page) -> tuple[int, int]:
    rows, cols = page.eval_on_selector(HOST, "e => [e.terminal.rows, e.terminal.cols]")
    return rows, cols


def type_line(page: Page, text: str) -> None:
    page.locator(HOST).click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def start_tty(client: Any, code: str) -> dict[str, Any]:
    response = client.post("/v1/processes", json={"command": sys.executable, "args": ["-u", "-c", code], "tty": True})
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


def test_open_a_shell_type_resize_and_colours(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    page, _ = pages.open(server.url + "/ui/", width=1280, height=900)
    page.get_by_role("button", name="Open a shell").click()
    expect(page.locator("li.proc")).to_have_count(1)
    shell = client.get("/v1/processes").json()["processes"][0]
    assert shell["tty"] is True
    expect(row(page, shell["id"]).locator(".kind")).to_have_text("TTY")
    wait_state(page, "live")

    type_line(page, "echo $((6*7))")
    wait_screen(page, r"^42\s*$")

    # The program sees the size of the terminal in the page...
    rows, cols = term_size(page)
    type_line(page, "stty size")
    wait_screen(page, rf"^{rows} {cols}\s*$")
    # ...and its new size when the window (so the panel) changes.
    page.set_viewport_size({"width": 900, "height": 700})
    page.wait_for_function(f"() => document.querySelector('{HOST}').terminal.cols !== {cols}")
    new_rows, new_cols = term_size(page)
    assert new_cols < cols
    type_line(page, "clear; stty size")
    wait_screen(page, rf"^{new_rows} {new_cols}\s*$")

    # Colours, 24-bit ones included (xterm sets those as inline styles: the CSP allows them
    # through the CSSOM, see csp.js).
    type_line(page, r"printf '\033[38;2;255;0;0mTRUERED\033[0m \033[32mGREEN\033[0m\n'")
    wait_screen(page, r"^TRUERED GREEN\s*$")
    red = page.locator(f"{HOST} .xterm-rows span", has_text=re.compile("^TRUERED$"))
    expect(red).to_have_css("color", "rgb(255, 0, 0)")
    expect(page.locator(f"{HOST} .xterm-rows span", has_text=re.compile("^GREEN$"))).not_to_have_css(
        "color", "rgb(213, 220, 228)"
    )

    # Paste goes in as typed text.
    page.locator(HOST).click()
    page.evaluate(f"() => document.querySelector('{HOST}').terminal.paste('echo pasted-$((1+2))')")
    page.keyboard.press("Enter")
    wait_screen(page, r"^pasted-3\s*$")

    type_line(page, "exit")
    wait_state(page, "exited")
    wait_exited(client, shell["id"])
    expect(row(page, shell["id"]).locator(".badge")).to_have_text("stopped (0)")


def test_a_curses_program_draws_full_screen_and_quits(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    info = start_tty(client, CURSES)
    page, _ = pages.open(server.url + "/ui/")
    row(page, info["id"]).locator(".proc-toggle").click()
    wait_state(page, "live")
    wait_screen(page, r"^curses ready")
    rows, cols = term_size(page)
    # It redrew at the page's size (the resize reached it, as SIGWINCH), on the alternate screen.
    wait_screen(page, rf"^size {rows}x{cols}; press q")
    assert page.eval_on_selector(HOST, "e => e.terminal.buffer.active.type") == "alternate"
    green = page.locator(f"{HOST} .xterm-rows span", has_text="curses ready")
    expect(green).to_have_class(re.compile(r"xterm-fg-\d+"))

    # Escape goes to the program, and does not fold the panel as it does elsewhere.
    page.locator(HOST).click()
    page.keyboard.press("Escape")
    expect(row(page, info["id"]).locator(".proc-toggle")).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("q")
    wait_screen(page, r"^curses done")
    wait_state(page, "exited")
    assert page.eval_on_selector(HOST, "e => e.terminal.buffer.active.type") == "normal"
    wait_exited(client, info["id"])


def test_the_terminal_reconnects_after_the_server_restarts(servers: Servers, pages: Pages) -> None:
    server, client = servers(token="tok3n-for-terminals")
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # the server goes away for a moment, on purpose
    page.get_by_label("Token", exact=True).fill("tok3n-for-terminals")
    page.get_by_label("Token", exact=True).press("Enter")
    expect(page.locator("#conn")).to_contain_text("Connected")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.get_by_role("button", name="Open a shell").click()
    wait_state(page, "live")
    type_line(page, "echo before-$((1+1))")
    wait_screen(page, r"^before-2\s*$")

    server.restart()
    # The page reconnects by itself; the screen comes back from ?replay= and goes on.
    wait_state(page, "live", timeout=20_000)
    assert len(sockets) >= 2
    assert all("replay=" in url for url in sockets)
    assert all("access_token" not in url for url in sockets), "the token went into a URL"
    wait_screen(page, r"^before-2\s*$")
    type_line(page, "echo after-$((2+3))")
    wait_screen(page, r"^after-5\s*$")

    shell = client.get("/v1/processes").json()["processes"][0]
    type_line(page, "exit")
    wait_state(page, "exited")
    wait_exited(client, shell["id"])


def test_an_interactive_process_takes_lines_and_a_close_of_stdin(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    code = "import sys; [print(line.strip().upper(), flush=True) for line in sys.stdin]; print('stdin closed')"
    page, _ = pages.open(server.url + "/ui/")
    page.get_by_label("Command", exact=True).fill(sys.executable)
    page.get_by_label("Arguments", exact=True).fill(f'-u -c "{code}"')
    page.get_by_label("Lines sent to stdin").check()
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("li.proc")).to_have_count(1)
    info = client.get("/v1/processes").json()["processes"][0]
    assert info["interactive"] is True
    assert info["tty"] is False
    proc = row(page, info["id"])
    expect(proc.locator(".kind")).to_have_text("stdin")

    line = proc.get_by_label("Send to stdin")
    line.fill("hello there")
    line.press("Enter")
    log = proc.locator(".log-scroller")
    expect(log).to_contain_text("HELLO THERE")
    expect(line).to_have_value("")
    proc.get_by_role("button", name="Send", exact=True).click()  # an empty line is a line too
    line.fill("second")
    proc.get_by_role("button", name="Send", exact=True).click()
    expect(log).to_contain_text("SECOND")
    proc.get_by_role("button", name="Close stdin").click()
    expect(log).to_contain_text("stdin closed")
    expect(proc.locator(".badge")).to_have_text("stopped (0)")
    expect(line).to_be_disabled()
    wait_exited(client, info["id"])


def test_start_form_starts_a_program_in_a_terminal(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    page, _ = pages.open(server.url + "/ui/")
    page.get_by_label("Command", exact=True).fill(sys.executable)
    page.get_by_label("Arguments", exact=True).fill(
        "-u -c \"import os; print('tty' if os.isatty(0) else 'no'); input()\""
    )
    page.get_by_label("A terminal (TTY)").check()
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("li.proc")).to_have_count(1)
    info = client.get("/v1/processes").json()["processes"][0]
    assert info["tty"] is True
    wait_state(page, "live")
    wait_screen(page, r"^tty\s*$")
    # Typing goes to the program at once: the terminal took the focus.
    page.keyboard.press("Enter")
    wait_state(page, "exited")
    wait_exited(client, info["id"])
    # An exited one still opens on its last screen.
    page.reload()
    row(page, info["id"]).locator(".proc-toggle").click()
    wait_screen(page, r"^tty\s*$")

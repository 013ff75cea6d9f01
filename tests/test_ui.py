"""The inspector at /ui/, driven in Debian's Chromium against a real server and real processes.

One browser for the module; every test gets fresh browser contexts (so fresh storage),
and every page it opens is checked afterwards: no request off the machine, no console
error. Every process a test starts is killed and waited for, even when the test fails.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import ui_helpers
from conftest import py, start, wait_exited, wait_log
from ui_helpers import TIMESTAMP, Pages, Servers, at_bottom, tab_to

pytestmark = pytest.mark.browser

# The fixtures every browser test module uses, from one place.
browser, pages, servers = ui_helpers.browser, ui_helpers.pages, ui_helpers.servers

SLEEPER = "import time\nprint('ready')\nwhile True: time.sleep(1)"
# 300 lines at once (more than a screen), then one every 50 ms.
TICKER = (
    "import itertools, time\nfor i in itertools.count():\n    print(f'tick {i}')\n    if i >= 300: time.sleep(0.05)\n"
)
TOKEN = "s3cret-token-for-tests"


def row(page: Page, process_id: str) -> Any:
    return page.locator(f'li.proc[data-id="{process_id}"]')


def log_lines(page: Page, process_id: str) -> list[str]:
    lines: list[str] = row(page, process_id).locator(".logview").evaluate("e => e.logView.lines")
    return lines


def wait_line_count(page: Page, process_id: str, more_than: int, timeout: float = 10_000) -> int:
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).logView.count > n",
        arg=[f'li.proc[data-id="{process_id}"] .logview', more_than],
        timeout=timeout,
    )
    count: int = row(page, process_id).locator(".logview").evaluate("e => e.logView.count")
    return count


def sentence(detail: str) -> str:
    text = detail[0].upper() + detail[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def test_list_shows_badges_command_pid_times_and_refreshes_itself(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    three = start(client, py("raise SystemExit(3)"))
    running = start(client, py(SLEEPER))
    stopped = start(client, py(SLEEPER))
    killed = start(client, py(SLEEPER))
    for process in (stopped, killed):
        wait_log(client, process["id"], "ready")  # its supervisor is ready for signals
    client.post(f"/v1/process/{stopped['id']}/stop")
    client.post(f"/v1/process/{killed['id']}/kill")
    for process in (three, stopped, killed):
        wait_exited(client, process["id"])

    page, _ = pages.open(server.url + "/")  # `/` redirects to the inspector
    expect(page).to_have_url(re.compile(r"/ui/$"))
    expect(page.locator("#conn")).to_contain_text("Connected")
    expect(row(page, three["id"]).locator(".badge")).to_have_text("stopped (3)")
    expect(row(page, running["id"]).locator(".badge")).to_have_text("running")
    expect(row(page, stopped["id"]).locator(".badge")).to_have_text("stopped (SIGTERM)")
    expect(row(page, killed["id"]).locator(".badge")).to_have_text("killed")
    # The widest badge stays in its column, clear of the command.
    badge = row(page, stopped["id"]).locator(".badge").bounding_box()
    command = row(page, stopped["id"]).locator(".proc-cmd").bounding_box()
    assert badge is not None
    assert command is not None
    assert badge["x"] + badge["width"] <= command["x"]
    assert row(page, stopped["id"]).locator(".badge").evaluate("e => e.scrollWidth <= e.clientWidth")
    expect(page.locator("#process-count")).to_have_text("(4)")
    # Newest first, as the API lists them.
    expect(page.locator("li.proc")).to_have_count(4)
    assert page.locator("li.proc").evaluate_all("els => els.map(e => e.dataset.id)") == [
        killed["id"],
        stopped["id"],
        running["id"],
        three["id"],
    ]

    first = row(page, three["id"])
    expect(first.locator(".proc-cmd")).to_have_text(f"{sys.executable} -u -c 'raise SystemExit(3)'")
    pid = client.get(f"/v1/process/{three['id']}").json()["pid"]
    expect(first.locator(".proc-pid")).to_have_text(str(pid))
    expect(first.locator(".proc-start")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    expect(first.locator(".proc-dur")).to_have_text(re.compile(r"^\d+s$"))
    expect(first.locator(".meta-item").last).to_contain_text("ran")
    # Details say times as the list does (24-hour), and break the log path only after a slash.
    first.locator(".proc-toggle").click()
    facts = first.locator(".facts")
    expect(facts.locator("div", has_text="Started").locator("dd")).to_have_text(re.compile(r"\b\d\d:\d\d:\d\d$"))
    log_path = facts.locator("dd.path")
    expect(log_path).to_have_text(three["logPaths"]["combined"])
    assert log_path.evaluate("e => e.querySelectorAll('wbr').length") == three["logPaths"]["combined"].count("/")
    first.locator(".proc-toggle").click()
    expect(row(page, running["id"]).locator(".meta-item").last).to_contain_text("for")

    # Changes made elsewhere show up within the 5 s refresh, with no click.
    newcomer = start(client, py(SLEEPER))
    client.post(f"/v1/process/{running['id']}/kill")
    expect(row(page, newcomer["id"]).locator(".badge")).to_have_text("running", timeout=8000)
    expect(row(page, running["id"]).locator(".badge")).to_have_text("killed", timeout=8000)
    expect(page.locator("li.proc").first).to_have_attribute("data-id", newcomer["id"])
    wait_log(client, newcomer["id"], "ready")
    client.post(f"/v1/process/{newcomer['id']}/kill")
    wait_exited(client, newcomer["id"])


def test_logs_stream_selector_strip_timestamps_colours_and_refresh(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    code = (
        "import sys\n"
        "print('\\x1b[31mred text\\x1b[0m plain')\n"
        "sys.stdout.flush()\n"
        "print('oops on stderr', file=sys.stderr)\n"
        "sys.stderr.flush()\n"
        "print('\\x1b[1;32mbold green\\x1b[0m done')\n"
    )
    process = start(client, py(code))
    wait_exited(client, process["id"])

    page, recorder = pages.open(server.url + "/ui/")
    toggle = row(page, process["id"]).locator(".proc-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    log = row(page, process["id"]).get_by_role("region", name=re.compile("^Log output of "))
    expect(log).to_contain_text("oops on stderr")
    expect(log).to_contain_text(TIMESTAMP)
    expect(log).to_contain_text("[stdout] red text plain")
    expect(row(page, process["id"]).locator(".follow-state")).to_have_text("Complete: the process has exited")
    expect(row(page, process["id"]).locator(".line-count")).to_have_text("3 lines")

    # Colours are colours, not escape codes.
    shown = log.inner_text()
    assert "\x1b" not in shown
    assert "[31m" not in shown
    red = log.get_by_text("red text", exact=True)
    expect(red).to_have_css("color", "rgb(255, 123, 114)")
    expect(log.get_by_text("bold green", exact=True)).to_have_css("font-weight", "700")
    # stderr stands out from stdout in the combined view.
    err = log.locator('.ln[data-stream="stderr"]')
    out = log.locator('.ln[data-stream="stdout"]').first
    expect(err).to_contain_text("oops on stderr")
    styles = "e => getComputedStyle(e).backgroundColor + ' ' + getComputedStyle(e).boxShadow"
    assert err.evaluate(styles) != out.evaluate(styles)

    stream = page.get_by_label("Stream", exact=True)
    stream.select_option("stderr")
    expect(log).not_to_contain_text("red text")
    expect(log).to_contain_text("oops on stderr")
    stream.select_option("stdout")
    expect(log).not_to_contain_text("oops")
    expect(log).to_contain_text("bold green done")

    strip = page.get_by_role("checkbox", name="Strip timestamps")
    strip.check()
    expect(log).not_to_contain_text(TIMESTAMP)
    assert log_lines(page, process["id"]) == ["\x1b[31mred text\x1b[0m plain", "\x1b[1;32mbold green\x1b[0m done"]
    stream.select_option("combined")
    expect(log).to_contain_text("[stderr] oops on stderr")
    expect(log).not_to_contain_text(TIMESTAMP)

    with page.expect_request(lambda r: f"/v1/process/{process['id']}/logs" in r.url) as refreshed:
        page.get_by_role("button", name="Refresh", exact=True).click()
    assert "strip_timestamps=true" in refreshed.value.url
    assert "stream=combined" in refreshed.value.url
    expect(row(page, process["id"]).locator(".line-count")).to_have_text("3 lines")
    # The choices are remembered for the next page.
    page.reload()
    row(page, process["id"]).locator(".proc-toggle").click()
    expect(page.get_by_role("checkbox", name="Strip timestamps")).to_be_checked()
    expect(log).not_to_contain_text(TIMESTAMP)
    assert recorder.api_requests("follow=true")


def test_live_follow_autoscroll_pauses_and_resumes(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    process = start(client, py(TICKER))
    page, _ = pages.open(server.url + "/ui/")
    pid = process["id"]
    row(page, pid).locator(".proc-toggle").click()
    state = row(page, pid).locator(".follow-state")
    expect(state).to_have_text("Live")
    scroller = f'li.proc[data-id="{pid}"] .log-scroller'
    count = wait_line_count(page, pid, 320)
    assert at_bottom(page, scroller)
    # Only what is on screen exists in the DOM.
    assert row(page, pid).locator(".ln").count() < 200

    # Scrolling up (with the keyboard) pauses the auto-scroll...
    page.locator(scroller).focus()
    page.keyboard.press("Home")
    expect(state).to_have_text("Live · auto-scroll paused")
    jump = row(page, pid).get_by_role("button", name=re.compile("^Jump to latest"))
    expect(jump).to_be_visible()
    count = wait_line_count(page, pid, count + 10)
    assert page.eval_on_selector(scroller, "e => e.scrollTop") == 0
    expect(jump).to_have_text(re.compile(r"^Jump to latest \(\d+ new\)$"))

    # ...and returning to the bottom resumes it.
    page.keyboard.press("End")
    expect(state).to_have_text("Live")
    expect(jump).to_be_hidden()
    count = wait_line_count(page, pid, count + 10)
    page.wait_for_function(
        f"() => {{ const e = document.querySelector('{scroller}'); "
        "return e.scrollTop + e.clientHeight >= e.scrollHeight - 9; }"
    )
    page.keyboard.press("PageUp")
    expect(jump).to_be_visible()
    jump.click()
    expect(state).to_have_text("Live")
    assert at_bottom(page, scroller)

    lines = log_lines(page, pid)
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "lines lost or repeated"

    row(page, pid).get_by_role("button", name="Stop", exact=True).click()
    expect(row(page, pid).locator(".badge")).to_have_text("stopped (SIGTERM)")
    expect(state).to_have_text("Complete: the process has exited")
    wait_exited(client, pid)


def test_follow_resumes_after_the_server_restarts(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    process = start(client, py(TICKER))
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # the server goes away for a moment, on purpose
    pid = process["id"]
    row(page, pid).locator(".proc-toggle").click()
    state = row(page, pid).locator(".follow-state")
    expect(state).to_have_text("Live")
    before = wait_line_count(page, pid, 310)

    server.restart()
    # The page reconnects with Last-Event-ID and carries on where it was.
    wait_line_count(page, pid, before + 40, timeout=15_000)
    expect(state).to_have_text("Live")
    resumed = [r for r in recorder.api_requests("follow=true") if "last-event-id" in r[2]]
    assert resumed, "no follow request resumed with Last-Event-ID"
    assert "tail=" not in resumed[0][1]
    lines = log_lines(page, pid)
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "lines lost or repeated"
    expect(page.locator("#banner")).to_be_hidden(timeout=8000)

    client.post(f"/v1/process/{pid}/kill")
    wait_exited(client, pid)


def test_start_form_starts_a_process_and_shows_errors(servers: Servers, pages: Pages, tmp_path: Path) -> None:
    server, client = servers()
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # the refused start is a 400 on purpose
    code = "import os; print(os.getcwd()); print('greeting=' + os.environ['GREETING'])"

    page.get_by_label("Command", exact=True).fill(sys.executable)
    page.get_by_label("Arguments", exact=True).fill(f'-u -c "{code}"')
    expect(page.get_by_role("list", name="Arguments as they will be sent").locator("li")).to_have_text(
        ["-u", "-c", code]
    )
    page.get_by_label("Working directory", exact=True).fill(str(tmp_path))
    page.get_by_label("Environment", exact=True).fill("# a comment\nGREETING=hello there\nOTHER=a=b\n")
    page.get_by_role("button", name="Start", exact=True).click()

    expect(page.locator("#start-status")).to_contain_text("Started")
    expect(page.locator("li.proc")).to_have_count(1)
    started = client.get("/v1/process").json()["processes"][0]
    assert started["args"] == ["-u", "-c", code]
    assert started["cwd"] == str(tmp_path)
    # The new process opens with its log.
    log = row(page, started["id"]).locator(".log-scroller")
    expect(log).to_contain_text("greeting=hello there")
    expect(log).to_contain_text(str(tmp_path))
    wait_exited(client, started["id"])

    # Mistakes caught before sending...
    page.get_by_label("Arguments", exact=True).fill("-c 'unclosed")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#start-error")).to_have_text(re.compile("single quote"))
    page.get_by_label("Arguments", exact=True).fill("")
    page.get_by_label("Environment", exact=True).fill("NOEQUALS")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#start-error")).to_have_text(re.compile("should look like NAME=value"))

    # ...and the server's own explanation (problem+json detail) for what only it can tell.
    page.get_by_label("Environment", exact=True).fill("")
    page.get_by_label("Command", exact=True).fill("no-such-command-for-sure")
    refused = client.post("/v1/process", json={"command": "no-such-command-for-sure", "args": []})
    assert refused.status_code == 400
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#start-error")).to_have_text(sentence(refused.json()["detail"]))
    expect(page.locator("li.proc")).to_have_count(1)


def test_stop_kill_and_delete_with_confirmation(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    gentle = start(client, py(SLEEPER))
    stubborn = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER
    rough = start(client, py(stubborn))
    wait_log(client, rough["id"], "ready")
    page, _ = pages.open(server.url + "/ui/")
    a, b = row(page, gentle["id"]), row(page, rough["id"])

    # Delete is not offered while it runs, and the panel says why.
    expect(a.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    expect(a.get_by_role("button", name="Delete", exact=True)).to_have_count(0)
    a.locator(".proc-toggle").click()
    expect(a.locator(".panel-note")).to_have_text(re.compile("Delete is offered once the process has exited"))

    a.get_by_role("button", name="Stop", exact=True).click()
    expect(a.locator(".badge")).to_have_text("stopped (SIGTERM)")
    expect(a.locator(".panel-note")).to_be_hidden()
    # One that ignores SIGTERM keeps running; the row says what was sent, and Kill ends it.
    b.get_by_role("button", name="Stop", exact=True).click()
    expect(b.locator(".proc-note")).to_have_text(re.compile(r"^Stop sent \(SIGTERM\)"))
    expect(b.locator(".badge")).to_have_text("running")
    b.get_by_role("button", name="Kill", exact=True).click()
    expect(b.locator(".badge")).to_have_text("killed")
    expect(b.locator(".proc-note")).to_be_empty()

    dialog = page.get_by_role("dialog", name="Delete this process?")
    a.get_by_role("button", name="Delete", exact=True).click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("cannot be undone")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(a).to_be_visible()
    assert client.get(f"/v1/process/{gentle['id']}").status_code == 200

    # Escape cancels too; focus goes back to the button.
    delete_b = b.get_by_role("button", name="Delete", exact=True)
    delete_b.focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(delete_b).to_be_focused()

    a.get_by_role("button", name="Delete", exact=True).click()
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(a).to_have_count(0)
    assert client.get(f"/v1/process/{gentle['id']}").status_code == 404
    expect(b).to_be_visible()


def test_token_is_asked_for_kept_and_sent_on_every_call_and_stream(servers: Servers, pages: Pages) -> None:
    server, client = servers(token=TOKEN)
    process = start(client, py(TICKER))
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # the 401s are the point

    banner = page.locator("#banner")
    expect(banner).to_contain_text("This server needs a token")
    expect(page.get_by_label("Token", exact=True)).to_be_visible()
    expect(page.locator("#conn")).to_contain_text("Token needed")
    token = page.get_by_label("Token", exact=True)
    token.fill("wrong")
    token.press("Enter")
    expect(page.locator("#token-saved")).to_have_text("Saved.")
    expect(banner).to_contain_text("the one given is missing or wrong")

    # The banner's button leads to the field.
    banner.get_by_role("button", name="Enter token").click()
    expect(token).to_be_focused()
    token.fill(TOKEN)
    token.press("Enter")
    expect(banner).to_be_hidden()
    expect(row(page, process["id"]).locator(".badge")).to_have_text("running")

    sent_from = len(recorder.requests)
    row(page, process["id"]).locator(".proc-toggle").click()
    expect(row(page, process["id"]).locator(".follow-state")).to_have_text("Live")
    wait_line_count(page, process["id"], 305)
    later = recorder.requests[sent_from:]
    follows = [r for r in later if "follow=true" in r[1]]
    assert follows, "the log was not followed"
    for _, url, headers in later:
        if "/v1/" in url:
            assert headers.get("authorization") == f"Bearer {TOKEN}", url

    # Kept in the browser: a new page needs nothing typed.
    page.reload()
    expect(page.get_by_label("Token", exact=True)).to_have_value(TOKEN)
    expect(row(page, process["id"]).locator(".badge")).to_have_text("running")
    expect(banner).to_be_hidden()
    row(page, process["id"]).get_by_role("button", name="Kill", exact=True).click()
    expect(row(page, process["id"]).locator(".badge")).to_have_text("killed")


def test_unreachable_server_is_reported(servers: Servers, pages: Pages) -> None:
    server, _ = servers()
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # refused connections are the point
    expect(page.locator("#conn")).to_contain_text("Connected")
    expect(page.locator("#empty")).to_be_visible()
    server.stop()

    page.get_by_role("button", name="Refresh list").click()
    expect(page.locator("#banner")).to_contain_text(f"Cannot reach the sandbox-agent server at {server.url}")
    expect(page.locator("#conn")).to_contain_text("Server unreachable")
    page.get_by_label("Command", exact=True).fill("true")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#start-error")).to_contain_text("Cannot reach the sandbox-agent server")


def test_large_log_opens_a_tail_and_loads_the_rest_on_demand(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    total = 200_000
    code = f"import sys\nsys.stdout.write(''.join(f'line {{i:06d}} ' + 'x' * 40 + '\\n' for i in range({total})))"
    process = start(client, py(code))
    wait_exited(client, process["id"], timeout=60)
    pid = process["id"]

    page, _ = pages.open(server.url + "/ui/")
    page.evaluate(
        """() => { window.longest = 0; new PerformanceObserver((list) => {
             for (const e of list.getEntries()) window.longest = Math.max(window.longest, e.duration);
           }).observe({ type: "longtask", buffered: false }); }"""
    )
    began = time.monotonic()
    row(page, pid).locator(".proc-toggle").click()
    log = row(page, pid).locator(".log-scroller")
    expect(log).to_contain_text(f"line {total - 1:06d}")
    assert time.monotonic() - began < 5
    count = row(page, pid).locator(".line-count")
    expect(count).to_have_text("1,000 lines")
    earlier = row(page, pid).locator(".log-earlier")
    expect(earlier).to_contain_text("Earlier lines are not loaded.")

    row(page, pid).get_by_role("button", name="Load 10,000 earlier lines").click()
    expect(count).to_have_text("11,000 lines")
    row(page, pid).get_by_role("button", name="Load all lines").click()
    expect(count).to_have_text("200,000 lines", timeout=20_000)
    expect(earlier).to_be_hidden()
    assert row(page, pid).locator(".ln").count() < 200, "every line became a DOM node"
    log.focus()
    page.keyboard.press("Home")
    expect(log).to_contain_text("line 000000")
    page.keyboard.press("End")
    expect(log).to_contain_text(f"line {total - 1:06d}")
    # The page never stopped answering for long (longest task in ms).
    assert page.evaluate("window.longest") < 1000


@pytest.mark.parametrize("width", [375, 1920])
def test_layout_keyboard_and_accessible_names(servers: Servers, pages: Pages, width: int, tmp_path: Path) -> None:
    server, client = servers()
    done = start(client, py("print('finished')"))
    wait_exited(client, done["id"])
    running = start(client, py(TICKER))
    page, _ = pages.open(server.url + "/ui/", width=width, height=900 if width > 400 else 812)
    expect(row(page, running["id"]).locator(".badge")).to_have_text("running")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"

    # A server that needs no token shows no Token field.
    expect(page.get_by_label("Token", exact=True)).to_be_hidden()
    # Everything is reached and worked with the keyboard alone.
    if width < 900:  # the start form starts folded on narrow screens
        tab_to(page, "Start a process")
        page.keyboard.press("Enter")
    tab_to(page, "Open a shell")
    for name in ("Command", "Arguments", "Working directory", "Environment", re.compile("^None")):
        tab_to(page, name)
    tab_to(page, "Start")
    tab_to(page, "Refresh list")
    tab_to(page, re.compile(r"^running.*-u -c"))
    page.keyboard.press("Enter")
    toggle = row(page, running["id"]).locator(".proc-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    tab_to(page, "Stop")
    tab_to(page, "Kill")
    tab_to(page, "Stream")
    tab_to(page, "Strip timestamps")
    tab_to(page, "Refresh")
    tab_to(page, re.compile("^Log output of "))
    expect(row(page, running["id"]).locator(".follow-state")).to_have_text("Live")
    log = row(page, running["id"]).locator(".log-scroller")
    box = log.bounding_box()
    assert box is not None
    assert 0 <= box["x"] <= box["x"] + box["width"] <= width
    page.screenshot(path=str(tmp_path / f"inspector-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"

    # Every control has the name the issue asks for.
    for label in ("Command", "Arguments", "Working directory", "Environment", "Stream"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    expect(page.get_by_role("checkbox", name="Strip timestamps", exact=True)).to_be_visible()
    for name in ("Stop", "Kill", "Delete", "Refresh", "Start", "Refresh list"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(1)

    # Escape folds the panel back, focus returns to its row; Kill works from the keyboard.
    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()
    tab_to(page, "Stop")
    tab_to(page, "Kill")
    page.keyboard.press("Enter")
    expect(row(page, running["id"]).locator(".badge")).to_have_text("killed")
    expect(row(page, running["id"]).get_by_role("button", name="Delete", exact=True)).to_be_focused()


def test_browser_side_parsers(servers: Servers, pages: Pages) -> None:
    """The SSE parser, argument splitting, env lines and ANSI handling, on edge cases."""
    server, _ = servers()
    page, _ = pages.open(server.url + "/ui/")
    result = page.evaluate(
        """async (argsLine) => {
          const { SSEParser } = await import("./sse.js");
          const { splitArgs, parseEnv, statusLabel } = await import("./format.js");
          const { parseAnsi } = await import("./ansi.js");
          const { collapseReturns } = await import("./logview.js");
          const stream = 'id: 5\\r\\ndata: {"a":1}\\r\\n\\r\\n: keepalive\\n\\ndata: x\\rdata: y\\r\\rid: 9\\n' +
            'event: exit\\ndata: {"status":"stopped"}\\n\\n';
          const splits = [];
          for (let cut = 0; cut <= stream.length; cut++) {
            const events = [];
            const parser = new SSEParser((e) => events.push(e));
            parser.push(stream.slice(0, cut));
            parser.push(stream.slice(cut));
            splits.push(JSON.stringify(events));
          }
          const ansi = parseAnsi("a\\x1b[31mb\\x1b[0mc\\x1b[2K\\x1b]0;title\\x07d\\x1b[38;5;196me");
          return {
            splits: [...new Set(splits)],
            args: splitArgs(argsLine).args,
            unclosed: splitArgs(`"oops`).error,
            env: parseEnv("A=1\\n\\n# no\\nB= two = 2\\r\\n").env,
            badEnv: parseEnv("=x").error,
            ansi: ansi.runs.map((r) => [r.text, r.style.fg]),
            carried: ansi.end.fg,
            collapsed: collapseReturns("[2026-01-30T12:32:45.123Z] [stdout] 10%\\r100%\\r"),
            labels: [
              statusLabel({ status: "stopped", exitCode: 3 }),
              statusLabel({ status: "stopped", exitCode: null, exitSignal: 15 }),
              statusLabel({ status: "killed", exitCode: null, exitSignal: 9 }),
              statusLabel({ status: "starting" }),
              statusLabel({ status: "stopped", exitCode: null }),
            ],
          };
        }""",
        r'''-c "print('a b')" 'it'\''s' x\ y "" "say \"hi\""''',
    )
    assert result["splits"] == [
        '[{"type":"message","data":"{\\"a\\":1}","id":"5"},{"type":"message","data":"x\\ny","id":"5"},'
        '{"type":"exit","data":"{\\"status\\":\\"stopped\\"}","id":"9"}]'
    ]
    assert result["args"] == ["-c", "print('a b')", "it's", "x y", "", 'say "hi"']
    assert "never closed" in result["unclosed"]
    assert result["env"] == {"A": "1", "B": " two = 2"}
    assert "NAME=value" in result["badEnv"]
    assert result["ansi"] == [["a", None], ["b", 1], ["c", None], ["d", None], ["e", 196]]
    assert result["carried"] == 196
    assert result["collapsed"] == "[2026-01-30T12:32:45.123Z] [stdout] 100%"
    assert result["labels"] == ["stopped (3)", "stopped (SIGTERM)", "killed", "starting", "stopped"]


def test_log_search_wrap_download_and_earlier_lines(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    code = (
        "for i in range(3000):\n"
        "    extra = ' needle' if i % 700 == 0 else ''\n"
        "    extra += ' long' * 80 if i == 2990 else ''\n"
        "    print(f'line {i:05d}{extra}')\n"
    )
    process = start(client, py(code))
    wait_exited(client, process["id"])
    pid = process["id"]
    page, recorder = pages.open(server.url + "/ui/")
    proc = row(page, pid)
    proc.locator(".proc-toggle").click()
    count = proc.locator(".line-count")
    expect(count).to_have_text("1,000 lines")

    # Search: matches counted and marked, next and previous go round.
    search = proc.get_by_role("searchbox", name="Search the log")
    search.fill("NEEDLE")  # any case
    matches = proc.locator(".match-count")
    expect(matches).to_have_text("1 of 2")
    log = proc.locator(".log-scroller")
    expect(log.locator("mark.hit.current")).to_have_text("needle")
    expect(log.locator("mark.hit.current").locator("xpath=..")).to_contain_text("line 02100")
    proc.get_by_role("button", name="Next match").click()
    expect(matches).to_have_text("2 of 2")
    expect(log.locator("mark.hit.current").locator("xpath=..")).to_contain_text("line 02800")
    search.press("Enter")
    expect(matches).to_have_text("1 of 2")
    proc.get_by_role("button", name="Previous match").click()
    expect(matches).to_have_text("2 of 2")

    # Earlier lines: only the older part is asked for and put in front, nothing lost or doubled.
    with page.expect_request(lambda r: "tail=11000" in r.url):
        proc.get_by_role("button", name="Load 10,000 earlier lines").click()
    expect(count).to_have_text("3,000 lines")
    expect(proc.locator(".log-earlier")).to_be_hidden()
    lines = log_lines(page, pid)
    assert [int(line.split("line ", 1)[1][:5]) for line in lines] == list(range(3000))
    expect(matches).to_have_text(re.compile(r"^\d of 5$"))

    # Wrapping: the long line takes several rows and nothing scrolls sideways.
    scroller = f'li.proc[data-id="{pid}"] .log-scroller'
    assert page.eval_on_selector(scroller, "e => e.scrollWidth > e.clientWidth + 5")
    proc.get_by_role("checkbox", name="Wrap long lines").check()
    page.wait_for_function(
        f"() => {{ const e = document.querySelector('{scroller}'); return e.scrollWidth <= e.clientWidth; }}"
    )
    log.focus()
    page.keyboard.press("End")
    long_line = log.locator(".ln", has_text="line 02990")
    expect(long_line).to_be_visible()
    box = long_line.bounding_box()
    assert box is not None
    assert box["height"] > 3 * 18
    # The last line is still reached (the rows are counted right).
    expect(log.locator(".ln", has_text="line 02999")).to_be_in_viewport()

    # Download: the whole log, as the API gives it.
    with page.expect_download() as download:
        proc.get_by_role("button", name="Download", exact=True).click()
    assert download.value.suggested_filename == f"{pid}-combined.log"
    saved = Path(download.value.path()).read_text()
    assert saved == client.get(f"/v1/process/{pid}/logs").json()["content"]
    assert saved.count("\n") == 3000
    assert recorder.api_requests("/logs?")

"""The inspector's view of services (SPEC section 8), in Debian's Chromium against a real
server: name, labels, the ready badge, ports as links, CPU and memory, restarts, the list's
filters, the start form's service fields, and the list following /v1/events."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import ui_helpers
from conftest import free_port, py, start, wait_exited, wait_for, wait_log
from ui_helpers import Pages, Servers, tab_to

pytestmark = pytest.mark.browser

browser, pages, servers = ui_helpers.browser, ui_helpers.pages, ui_helpers.servers

SLEEPER = "import time\nprint('ready')\nwhile True: time.sleep(1)"


def row(page: Page, process_id: str) -> Any:
    return page.locator(f'li.proc[data-id="{process_id}"]')


def shown_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("li.proc").evaluate_all("els => els.map(e => e.dataset.id)")
    return ids


def kill(client: Any, process_id: str) -> None:
    client.post(f"/v1/process/{process_id}/kill")
    wait_exited(client, process_id)


def test_dev_server_started_from_the_form_shows_name_ready_port_usage_and_labels(
    servers: Servers, pages: Pages, tmp_path: Path
) -> None:
    server, client = servers()
    port = free_port()
    (tmp_path / "hello.txt").write_text("hi")
    page, recorder = pages.open(server.url + "/ui/")

    page.get_by_label("Command", exact=True).fill(sys.executable)
    page.get_by_label("Arguments", exact=True).fill(f"-m http.server {port} --bind 127.0.0.1")
    page.get_by_label("Working directory", exact=True).fill(str(tmp_path))
    page.get_by_text("Name, labels, wait until ready").click()
    page.get_by_label("Name", exact=True).fill("web")
    page.get_by_label("Labels", exact=True).fill("app=shop\ntier = front\n")
    page.get_by_label("It listens on port", exact=True).fill(str(port))
    page.get_by_label("Timeout in seconds", exact=True).fill("30")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/process")) as posted:
        page.get_by_role("button", name="Start", exact=True).click()
    assert json.loads(posted.value.post_data or "") == {
        "command": sys.executable,
        "args": ["-m", "http.server", str(port), "--bind", "127.0.0.1"],
        "cwd": str(tmp_path),
        "name": "web",
        "labels": {"app": "shop", "tier": "front"},
        "waitFor": {"port": port, "timeoutMs": 30000},
    }
    expect(page.locator("#start-status")).to_contain_text("Started")
    (web,) = client.get("/v1/process", params={"name": "web"}).json()["processes"]
    assert web["ready"] is True

    proc = row(page, web["id"])
    expect(proc.locator(".proc-name")).to_have_text("web")
    expect(proc.locator(".ready")).to_have_text("ready")
    link = proc.get_by_role("link", name=re.compile(f"^Port {port}, open"))
    # Ports are sampled once a second: the list right after the start may not have them yet,
    # the next poll (5 s) does.
    expect(link).to_have_text(f":{port}", timeout=12_000)
    # The host the inspector was loaded from (127.0.0.1 here), in a new tab.
    expect(link).to_have_attribute("href", f"http://127.0.0.1:{port}/")
    expect(link).to_have_attribute("target", "_blank")
    expect(proc.locator(".proc-labels .label")).to_have_text(["app=shop", "tier=front"])
    expect(proc.locator(".proc-cpu")).to_have_text(re.compile(r"^CPU \d+(\.\d)?%$"))
    expect(proc.locator(".proc-mem")).to_have_text(re.compile(r"^Memory \d+(\.\d+)? (KiB|MiB|GiB)$"))
    # No restart policies yet: a process that never restarted says nothing about it.
    expect(proc.locator(".proc-restarts")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "services-1280.png"), full_page=True)

    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == f"http://127.0.0.1:{port}/"
    expect(tab.locator("body")).to_contain_text("hello.txt")
    tab.close()

    proc.get_by_role("button", name="Stop", exact=True).click()
    expect(proc.locator(".badge")).to_have_text(re.compile("^stopped"))
    # Readiness, ports and usage are about a running process: gone once it exited.
    expect(proc.locator(".ready")).to_be_hidden()
    expect(proc.locator(".port")).to_have_count(0)
    expect(proc.locator(".proc-cpu")).to_be_hidden()
    expect(proc.locator(".proc-labels .label")).to_have_count(2)
    wait_exited(client, web["id"])
    assert recorder.api_requests("/v1/events"), "the page did not follow /v1/events"


def test_start_form_wait_for_mistakes_and_a_timeout(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # the 504 is the point
    page.get_by_label("Command", exact=True).fill(sys.executable)
    page.get_by_label("Arguments", exact=True).fill("-u -c 'import time; print(\"up\"); time.sleep(600)'")
    page.get_by_text("Name, labels, wait until ready").click()
    error = page.locator("#start-error")

    page.get_by_label("It listens on port", exact=True).fill("http")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(error).to_have_text("The port to wait for is a number from 1 to 65535.")
    expect(page.get_by_label("It listens on port", exact=True)).to_be_focused()
    page.get_by_label("It listens on port", exact=True).fill("")
    page.get_by_label("Timeout in seconds", exact=True).fill("5")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(error).to_contain_text("A timeout needs something to wait for")
    page.get_by_label("Labels", exact=True).fill("novalue")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(error).to_contain_text("should look like key=value")
    page.get_by_label("Labels", exact=True).fill("")
    assert not recorder.api_requests("POST")

    # A log line that never comes: the start answers 504, the process is left running and listed.
    page.get_by_label("A log line matches", exact=True).fill("never printed")
    page.get_by_label("Timeout in seconds", exact=True).fill("0.3")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(error).to_contain_text("never printed")
    (waiting,) = client.get("/v1/process").json()["processes"]
    assert waiting["ready"] is False
    proc = row(page, waiting["id"])
    expect(proc.locator(".ready")).to_have_text("not ready")
    expect(proc.locator(".badge")).to_have_text("running")
    wait_log(client, waiting["id"], "up")
    kill(client, waiting["id"])


def test_filters_narrow_the_list_by_status_label_and_name(servers: Servers, pages: Pages) -> None:
    server, client = servers()
    done = start(client, {**py("print('done')"), "labels": {"app": "shop"}})
    wait_exited(client, done["id"])
    shop = start(client, {**py(SLEEPER), "name": "shop-web", "labels": {"app": "shop", "tier": "web"}})
    blog = start(client, {**py(SLEEPER), "name": "blog", "labels": {"app": "blog"}})
    plain = start(client, py(SLEEPER))
    page, recorder = pages.open(server.url + "/ui/")
    recorder.allow_network_failures = True  # the refused label filter is a 400 on purpose
    everyone = [plain["id"], blog["id"], shop["id"], done["id"]]
    expect(page.locator("li.proc")).to_have_count(4)
    assert shown_ids(page) == everyone
    expect(page.get_by_role("button", name="Clear filters")).to_be_hidden()

    page.get_by_label("Filter by status").select_option("exited")
    expect(page.locator("li.proc")).to_have_count(1)
    assert shown_ids(page) == [done["id"]]
    page.get_by_label("Filter by status").select_option("running")
    expect(page.locator("li.proc")).to_have_count(3)

    label = page.get_by_label("Filter by label")
    label.fill("app=shop")
    expect(page.locator("li.proc")).to_have_count(1)
    assert shown_ids(page) == [shop["id"]]
    with page.expect_request(lambda r: "label=app%3Dshop&label=tier" in r.url) as asked:
        label.fill("app=shop tier")
        label.press("Enter")
    assert "status=running" in asked.value.url
    expect(page.locator("li.proc")).to_have_count(1)

    page.get_by_role("button", name="Clear filters").click()
    expect(page.locator("li.proc")).to_have_count(4)
    expect(page.get_by_label("Filter by status")).to_be_focused()
    page.get_by_label("Filter by name").fill("blog")
    expect(page.locator("li.proc")).to_have_count(1)
    assert shown_ids(page) == [blog["id"]]
    page.get_by_label("Filter by name").fill("nobody")
    expect(page.locator("#empty")).to_have_text("No processes match these filters.")
    expect(page.locator("li.proc")).to_have_count(0)

    # What the server refuses is said next to the filters, in its words.
    page.get_by_label("Filter by name").fill("")
    refused = client.get("/v1/process", params={"status": "sleeping"})
    assert refused.status_code == 400
    page.get_by_label("Filter by status").evaluate(
        "select => { select.add(new Option('sleeping', 'sleeping')); select.value = 'sleeping';"
        " select.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    detail = refused.json()["detail"]
    expect(page.locator("#filter-error")).to_contain_text(detail[0].upper() + detail[1:].rstrip("."))
    page.get_by_label("Filter by status").select_option("")
    expect(page.locator("#filter-error")).to_be_hidden()
    # A label filter with no key ("=x") matches no process; it is not refused.
    label.fill("=x")
    expect(page.locator("li.proc")).to_have_count(0)
    label.fill("")
    expect(page.locator("li.proc")).to_have_count(4)
    for process in (shop, blog, plain):
        kill(client, process["id"])


def test_list_follows_events_without_polling(servers: Servers, pages: Pages) -> None:
    """With the page's clock stopped, no poll runs: only /v1/events can bring the changes."""
    server, client = servers()

    def stop_the_clock(page: Page) -> None:
        page.clock.install()

    page, _ = pages.open(server.url + "/ui/", before=stop_the_clock)
    # A second on from the page's own now (never in its past): the 5 s poll is not reached.
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)  # Python: seconds
    expect(page.locator("#conn")).to_have_attribute("data-events", "live")
    expect(page.locator("#empty")).to_be_visible()

    process = start(client, {**py(SLEEPER), "name": "late", "waitFor": {"logPattern": "^ready$", "timeoutMs": 0}})
    proc = row(page, process["id"])
    expect(proc.locator(".proc-name")).to_have_text("late")
    expect(proc.locator(".ready")).to_have_text("ready")  # the ready event
    client.post(f"/v1/process/{process['id']}/kill")
    expect(proc.locator(".badge")).to_have_text("killed")  # the exited event
    wait_exited(client, process["id"])
    assert client.delete(f"/v1/process/{process['id']}").status_code == 204
    expect(proc).to_have_count(0)  # the deleted event
    expect(page.locator("#empty")).to_be_visible()


def test_restarts_are_shown_and_a_backoff_too(servers: Servers, pages: Pages) -> None:
    """Real restarts by the supervisor: the count once it gave up, and a backoff under way."""
    server, client = servers()
    failing = {**py("raise SystemExit(1)")}
    flaky = start(
        client, {**failing, "name": "flaky", "restart": {"policy": "on-failure", "maxRestarts": 2, "backoffMs": 10}}
    )
    slow = start(client, {**failing, "name": "slow", "restart": {"policy": "on-failure", "backoffMs": 30000}})
    wait_for(lambda: client.get(f"/v1/process/{flaky['id']}").json()["status"] != "running", what="flaky to give up")
    assert client.get(f"/v1/process/{flaky['id']}").json()["restarts"] == 2
    wait_for(lambda: client.get(f"/v1/process/{slow['id']}").json().get("restarting"), what="slow's backoff")
    page, _ = pages.open(server.url + "/ui/")
    expect(row(page, flaky["id"]).locator(".proc-restarts")).to_have_text("restarted 2 times")
    expect(row(page, slow["id"]).locator(".proc-restarts")).to_have_text("restarting…")
    kill(client, slow["id"])  # a kill ends the backoff
    expect(row(page, slow["id"]).locator(".proc-restarts")).to_be_hidden()


def test_services_at_375_px_and_by_keyboard(servers: Servers, pages: Pages, tmp_path: Path) -> None:
    server, client = servers()
    port = free_port()
    labels = {"app": "a-rather-long-application-name", "team": "platform-and-infrastructure"}
    body = {
        "command": sys.executable,
        "args": ["-m", "http.server", str(port), "--bind", "127.0.0.1"],
        "cwd": str(tmp_path),
        "name": "web-with-a-long-name-for-a-narrow-screen",
        "labels": labels,
        "waitFor": {"port": port, "timeoutMs": 30000},
    }
    web = start(client, body)
    wait_for(lambda: port in client.get(f"/v1/process/{web['id']}").json().get("ports", []), what="the port sampled")
    page, _ = pages.open(server.url + "/ui/", width=375, height=812)
    proc = row(page, web["id"])
    link = proc.get_by_role("link", name=re.compile(f"^Port {port}, open"))
    expect(link).to_be_visible()
    expect(proc.locator(".proc-mem")).to_be_visible()
    expect(proc.locator(".proc-labels .label")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "the page scrolls sideways"
    for locator in (link, proc.locator(".proc-labels"), page.get_by_label("Filter by name")):
        box = locator.bounding_box()
        assert box is not None
        assert 0 <= box["x"] <= box["x"] + box["width"] <= 375

    for name in ("Filter by status", "Filter by label", "Filter by name"):
        tab_to(page, name)
    tab_to(page, re.compile(r"^running.*web-with-a-long-name"))
    tab_to(page, "Stop")
    tab_to(page, "Kill")
    tab_to(page, re.compile(f"^Port {port}, open"))
    page.screenshot(path=str(tmp_path / "services-375.png"), full_page=True)
    kill(client, web["id"])


def test_service_helpers(servers: Servers, pages: Pages) -> None:
    server, _ = servers()
    page, _ = pages.open(server.url + "/ui/")
    result = page.evaluate(
        """async () => {
          const f = await import("./format.js");
          return {
            urls: [
              f.portUrl(3000, { hostname: "127.0.0.1" }),
              f.portUrl(3000, { hostname: "sandbox.example.test" }),
              f.portUrl(8080, { hostname: "[::1]" }),
              f.portUrl(80, { hostname: "" }),
              f.portUrl(5173),
            ],
            bytes: [0, 512, 8192, 22_440_000, 1_340_000_000].map(f.formatBytes),
            cpu: [0, 0.04, 9.96, 12.5, 180].map(f.formatCpu),
            labels: f.parseLabels("app=shop\\n\\n# skip\\n tier = web \\nempty=\\r\\n").labels,
            bad: f.parseLabels("ok=1\\nnovalue").error,
          };
        }"""
    )
    assert result["urls"] == [
        "http://127.0.0.1:3000/",
        "http://sandbox.example.test:3000/",
        "http://[::1]:8080/",
        "http://127.0.0.1:80/",
        "http://127.0.0.1:5173/",
    ]
    assert result["bytes"] == ["0 B", "512 B", "8.00 KiB", "21.4 MiB", "1.25 GiB"]
    assert result["cpu"] == ["0.0%", "0.0%", "10.0%", "13%", "180%"]
    assert result["labels"] == {"app": "shop", "tier": "web", "empty": ""}
    assert "Label line 2 should look like key=value" in result["bad"]

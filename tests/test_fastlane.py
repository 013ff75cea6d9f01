"""The fast lane (server/fastlane.py) answers a plain GET of a process exactly as the routes do.

A query string the routes ignore (``?via=routes``) sends the same request through FastAPI,
so the two answers can be set side by side.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from conftest import Server, py, start, wait_exited, wait_log


def both(client: httpx.Client, path: str) -> tuple[httpx.Response, httpx.Response]:
    return client.get(path), client.get(path, params={"via": "routes"})


def assert_same(client: httpx.Client, path: str) -> None:
    fast, routed = both(client, path)
    assert fast.status_code == routed.status_code
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.content == routed.content, path


def test_a_process_reads_the_same_through_the_fast_lane(checked_shared_server: Server) -> None:
    with checked_shared_server.client() as client:
        running = start(client, {**py("import time\nprint('ready', flush=True)\ntime.sleep(60)"), "name": "lane"})
        wait_log(client, running["id"], "ready")
        done = start(client, py("raise SystemExit(4)"))
        wait_exited(client, done["id"])
        for key in (running["id"], "lane", done["id"]):
            assert_same(client, f"/v1/process/{key}")
            assert_same(client, f"/v1/processes/{key}")
        assert client.get("/v1/processes/lane").json()["id"] == running["id"]
        # What the lane does not know goes on to the routes: their problems, their config.
        for path in ("/v1/process/no-such-process", "/v1/processes/no-such-process", "/v1/processes/config"):
            assert_same(client, path)
        assert client.get("/v1/processes/no-such-process").headers["content-type"] == "application/problem+json"
        client.post(f"/v1/process/{running['id']}/kill")
        wait_exited(client, running["id"])
        assert_same(client, f"/v1/processes/{running['id']}")


def test_the_fast_lane_is_behind_the_token(server_factory: Callable[..., Server]) -> None:
    server = server_factory(token="s3cret")
    with server.client() as client:
        process = start(client, py("pass"))
    bare = httpx.get(f"{server.url}/v1/processes/{process['id']}")
    assert bare.status_code == 401
    assert bare.headers["content-type"] == "application/problem+json"
    wrong = httpx.get(f"{server.url}/v1/process/{process['id']}", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401

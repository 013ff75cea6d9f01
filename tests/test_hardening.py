"""Hostile or broken input and broken state: a clear 4xx or a skipped record, never a 5xx."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Server, py, start, wait_exited


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    for word in words:
        assert word in str(body["detail"]), body
    return body


def test_lone_surrogates_are_a_clear_400(server: Server) -> None:
    with server.client() as client:
        for body in (
            '{"command": "echo", "args": ["\\ud800"]}',
            '{"command": "echo", "env": {"A": "\\udfff"}}',
            '{"command": "echo", "env": {"\\ud800": "x"}}',
            '{"command": "ec\\ud800ho"}',
            '{"command": "echo", "cwd": "/tmp/\\ud800"}',
        ):
            started = time.monotonic()
            response = client.post("/v1/process", content=body, headers={"content-type": "application/json"})
            assert_problem(response, 400, "surrogate")
            assert time.monotonic() - started < 5, "a bad request must not hang"
        assert client.get("/v1/process").json()["processes"] == []


def test_an_unknown_id_of_any_shape_is_404(server: Server) -> None:
    with server.client() as client:
        for bad in ("nope-does-not-exist", "ABC", "0" * 26):
            assert_problem(client.get(f"/v1/process/{bad}"), 404, bad)
            assert_problem(client.delete(f"/v1/process/{bad}"), 404)


def _write_state(directory: Path, text: str) -> None:
    directory.mkdir(mode=0o700)
    (directory / "state.json").write_text(text)


def test_corrupt_or_foreign_state_records_are_skipped_not_fatal(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    with server.client() as client:
        good = start(client, py("print('kept')"))
        wait_exited(client, good["id"])
    server.stop()

    processes = server.data_dir / "processes"
    good_state = json.loads((processes / good["id"] / "state.json").read_text())
    # A sleeping process that a forged record claims as its own: it must not be signalled.
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ids = iter(f"{n:026d}".replace("0", "a", 1) for n in range(1, 10))
        _write_state(processes / next(ids), "{not json")
        _write_state(processes / next(ids), json.dumps({"id": "x", "status": "running"}))  # fields missing
        _write_state(processes / next(ids), json.dumps(dict(good_state, args="not a list")))
        _write_state(processes / next(ids), json.dumps(dict(good_state, status="exploded")))
        _write_state(processes / next(ids), "[1, 2, 3]")
        forged = dict(good_state, status="running", pid=victim.pid, pidStart=None, supervisorPid=victim.pid)
        _write_state(processes / next(ids), json.dumps(forged))  # names the good process's id
        server.start()
        with server.client() as client:
            listed = client.get("/v1/process")
            assert listed.status_code == 200
            assert [p["id"] for p in listed.json()["processes"]] == [good["id"]]
            assert client.get(f"/v1/process/{good['id']}").json()["status"] == "stopped"
        assert victim.poll() is None, "a pid named by a forged record was signalled"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert os.path.isdir(processes / good["id"])

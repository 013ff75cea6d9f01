"""Retention: exited records forgotten past a count or an age, when asked; never by default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Server, py, start, wait_exited, wait_for


def ids(server: Server) -> list[str]:
    with server.client() as client:
        return [p["id"] for p in client.get("/v1/process").json()["processes"]]


def test_keep_the_newest_exited_and_every_running_one(server_factory: Callable[..., Server]) -> None:
    server = server_factory(extra_args=["--retain-exited", "2"])
    with server.client() as client:
        running = start(client, {"command": "sleep", "args": ["600"]})
        done = []
        for i in range(4):
            process = start(client, py(f"print({i})"))
            wait_exited(client, process["id"])
            done.append(process)
        kept = [p["id"] for p in done[-2:]]
        wait_for(lambda: set(ids(server)) == {running["id"], *kept}, 10, "the older exits to be forgotten")
        for old in done[:2]:
            assert client.get(f"/v1/process/{old['id']}").status_code == 404
            wait_for(lambda old=old: not Path(old["logPaths"]["stdout"]).parent.exists(), 10, "its directory to go")
        client.post(f"/v1/process/{running['id']}/kill")
        wait_exited(client, running["id"])
        # Now three exited: the oldest of them goes.
        wait_for(lambda: set(ids(server)) == {running["id"], kept[1]}, 10, "the limit to hold")


def test_keep_exited_for_a_time_and_apply_limits_at_start(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    with server.client() as client:
        first = start(client, py("print(1)"))
        second = start(client, py("print(2)"))
        wait_exited(client, first["id"])
        wait_exited(client, second["id"])
    server.stop()
    server.extra_args = ["--retain-exited", "1"]
    server.start()
    assert len(ids(server)) == 1  # applied to what the previous server left
    server.stop()
    server.extra_args = ["--retain-for", "1s"]
    server.start()
    wait_for(lambda: ids(server) == [], 15, "the exited process to age out")


def test_no_retention_by_default(server: Server) -> None:
    with server.client() as client:
        started = [start(client, py("print(1)")) for _ in range(3)]
        for process in started:
            wait_exited(client, process["id"])
    assert sorted(ids(server)) == sorted(p["id"] for p in started)


def test_bad_retention_settings_are_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for args in (["--retain-exited", "-1"], ["--retain-for", "soon"], ["--retain-for", "0"]):
        command = [sys.executable, "-m", "sandbox_agent", "server", "--data-dir", str(tmp_path), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, args
        assert "retain" in result.stderr
        assert "Traceback" not in result.stderr

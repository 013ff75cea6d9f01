"""A full disk under the data directory: no lies, nothing left running, no glued lines.

A real full filesystem: a small tmpfs mounted for the test (needs root, as CI runs).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, py, sse_events, start, wait_exited, wait_for, wait_log
from sandbox_agent.supervisor.capture import LogFile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root (CI runs as root)")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; return the filler to delete."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_after_a_failed_write_the_log_goes_on_on_a_line_of_its_own(small_fs: Path) -> None:
    path = small_fs / "stdout.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        log = LogFile(fd)
        log.write(b"before\n", b"[ts] ")
        filler = fill(small_fs)
        # Fill the last page of the log's own blocks too, so that the next write is cut.
        log.write(b"y" * 10000 + b"\n", b"[ts] ")
        log.write(b"lost entirely\n", b"[ts] ")
        assert log.lost > 0
        filler.unlink()
        log.write(b"after 1\nafter 2\n", b"[ts] ")
    finally:
        os.close(fd)
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b"[ts] before"
    assert lines[-1] == b""  # ends with a newline
    assert lines[-3:-1] == [b"[ts] after 1", b"[ts] after 2"]
    marker = lines[-4]
    assert marker.startswith(b"[ts] [sandbox-agent: ")
    assert b"bytes of log lost: No space left on device]" in marker
    for line in lines[1:-4]:  # whatever was cut stands on its own line(s)
        assert line.startswith(b"[ts] ")


def test_a_start_on_a_full_disk_is_a_507_and_leaves_nothing_running(
    server_factory: Callable[..., Server], small_fs: Path
) -> None:
    server = server_factory(data_dir=small_fs / "data")
    with server.client() as client:
        for _ in range(3):
            # Again each time: a start that fails frees the blocks it had reserved (a
            # ready directory's exit.rec), so the disk is full again only once refilled.
            filler = fill(small_fs)
            response = client.post("/v1/process", json={"command": "sleep", "args": ["600"]})
            assert response.status_code == 507, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert "full" in response.json()["detail"]
        assert client.get("/v1/process").json()["processes"] == []
        # Nothing runs that no record shows (a supervisor that answered may take a moment to exit).
        server.assert_no_leftovers()
        filler.unlink()
        process = start(client, py("print('room again')"))
        wait_exited(client, process["id"])
        wait_for(lambda: "room again" in client.get(f"/v1/process/{process['id']}/logs").text, 10, "its output")


#: Waits for a file to appear, then exits with 3.
WAITER = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)\nos._exit(3)"
#: The same, after starting a daemon that closed its output (its supervisor outlives the exit).
WAITER_WITH_DAEMON = (
    "import os, subprocess, sys, time\n"
    "d = subprocess.Popen(['sleep', '1000'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
    " stderr=subprocess.DEVNULL, start_new_session=True)\n"
    "print('daemon', d.pid)\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
    "os._exit(3)"
)


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (one no server reaps may stay a while)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def start_waiter(client: httpx.Client, code: str, go: Path) -> dict[str, Any]:
    body = py(code)
    body["args"].append(str(go))
    return start(client, body)


def on_disk(server: Server, process_id: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((server.data_dir / "processes" / process_id / "state.json").read_text())
    return state


def check_exit_shown(client: httpx.Client, process_id: str, *, unsaved: bool) -> dict[str, Any]:
    """The exit (code 3) in both dialects, and whether they say it is not recorded yet.

    An exit the supervisor told is shown at once, and flagged as unsaved once the engine
    has read what the supervisor could write of it (the exit record): waited for."""
    if unsaved:
        wait_for(lambda: client.get(f"/v1/process/{process_id}").json().get("stateUnsaved"), 10, "the unsaved flag")
    v1 = client.get(f"/v1/process/{process_id}").json()
    assert (v1["status"], v1["exitCode"], v1["exitSignal"]) == ("stopped", 3, None)
    assert "stoppedAt" in v1
    current = client.get(f"/v1/processes/{process_id}").json()
    assert (current["status"], current["exitCode"]) == ("exited", 3)
    assert "exitedAtMs" in current
    for shown in (v1, current):
        assert shown.get("stateUnsaved", False) is unsaved, shown
    return dict(v1)


def check_recorded_once_there_is_room(server: Server, process_id: str, shown: dict[str, Any]) -> None:
    """The disk has room again: state.json gets the exit (code 3), which the API shows as
    it did (``shown``) less the unsaved flag, before a restart and after it."""
    shown = {name: value for name, value in shown.items() if name != "stateUnsaved"}
    with server.client() as client:
        wait_for(lambda: "stateUnsaved" not in client.get(f"/v1/process/{process_id}").json(), 10, "the record")
        recorded = on_disk(server, process_id)
        assert (recorded["status"], recorded["exitCode"], recorded["exitSignal"]) == ("stopped", 3, None)
        assert client.get(f"/v1/process/{process_id}").json() == shown
    server.restart()
    with server.client() as client:
        assert client.get(f"/v1/process/{process_id}").json() == shown


def test_an_exit_on_a_full_disk_keeps_its_code_and_is_recorded_once_there_is_room(
    server_factory: Callable[..., Server], small_fs: Path
) -> None:
    server = server_factory(data_dir=small_fs / "data")
    go = small_fs / "go"
    with server.client() as client:
        process = start_waiter(client, WAITER, go)
        filler = fill(small_fs)
        try:
            with client.stream("GET", f"/v1/process/{process['id']}/logs", params={"follow": "true"}) as response:
                events = sse_events(response)
                next(events)  # the snapshot: the follow runs
                go.touch()  # a directory entry fits where a page does not
                exit_event = next(e for e in events if e.event == "exit")
            assert json.loads(exit_event.data) == {"status": "stopped", "exitCode": 3, "exitSignal": None}
            shown = check_exit_shown(client, process["id"], unsaved=True)
            assert on_disk(server, process["id"])["status"] == "running"  # no room for it there
        finally:
            filler.unlink()
    check_recorded_once_there_is_room(server, process["id"], shown)
    with server.client() as client:
        assert client.delete(f"/v1/process/{process['id']}").status_code == 204


def test_an_exit_on_a_full_disk_while_no_server_runs_survives_restarts_on_the_full_disk(
    server_factory: Callable[..., Server], small_fs: Path
) -> None:
    server = server_factory(data_dir=small_fs / "data")
    go = small_fs / "go"
    with server.client() as client:
        process = start_waiter(client, WAITER, go)
    supervisor = on_disk(server, process["id"])["supervisorPid"]
    server.crash()
    filler = fill(small_fs)
    try:
        go.touch()
        wait_for(lambda: not alive(supervisor), 10, "the supervisor to be gone")
        server.start()
        with server.client() as client:
            shown = check_exit_shown(client, process["id"], unsaved=True)
            server.restart()  # the disk still full: the exit record still holds it
            assert client.get(f"/v1/process/{process['id']}").json() == shown
    finally:
        filler.unlink()
    with server.client() as client:
        wait_for(lambda: "stateUnsaved" not in client.get(f"/v1/process/{process['id']}").json(), 10, "the record")
        assert on_disk(server, process["id"])["exitCode"] == 3
        assert client.delete(f"/v1/process/{process['id']}").status_code == 204


def test_an_exit_on_a_full_disk_is_seen_while_a_daemon_keeps_its_supervisor(
    server_factory: Callable[..., Server], small_fs: Path
) -> None:
    server = server_factory(data_dir=small_fs / "data")
    go = small_fs / "go"
    with server.client() as client:
        process = start_waiter(client, WAITER_WITH_DAEMON, go)
        text = wait_log(client, process["id"], "daemon ")
        daemon = int(text.split("daemon ")[1].split()[0])
        filler = fill(small_fs)
        try:
            go.touch()
            wait_exited(client, process["id"])
            check_exit_shown(client, process["id"], unsaved=True)
            assert client.get(f"/v1/process/{process['id']}").json()["descendantsRunning"] is True
            assert client.post(f"/v1/process/{process['id']}/kill").status_code == 204
            wait_for(lambda: not Path(f"/proc/{daemon}").exists(), 10, "the daemon to be killed")
        finally:
            filler.unlink()
        wait_for(lambda: "stateUnsaved" not in client.get(f"/v1/process/{process['id']}").json(), 10, "the record")
        assert on_disk(server, process["id"])["exitCode"] == 3
        check_exit_shown(client, process["id"], unsaved=False)


def test_an_exit_its_supervisor_could_not_record_at_all_is_recorded_by_the_server(
    server_factory: Callable[..., Server], small_fs: Path
) -> None:
    """The supervisor tells the server the exit before it writes it: a supervisor that
    ends without writing it (here: no room for state.json, and its exit record gone)
    loses nothing, the server writes the exit itself once there is room."""
    server = server_factory(data_dir=small_fs / "data")
    go = small_fs / "go"
    with server.client() as client:
        process = start_waiter(client, WAITER, go)
        supervisor = on_disk(server, process["id"])["supervisorPid"]
        (server.data_dir / "processes" / process["id"] / "exit.rec").unlink()
        filler = fill(small_fs)
        try:
            go.touch()
            wait_for(lambda: not alive(supervisor), 10, "the supervisor to end")
            shown = check_exit_shown(client, process["id"], unsaved=True)
            assert on_disk(server, process["id"])["status"] == "running"  # no room for it there
        finally:
            filler.unlink()
    check_recorded_once_there_is_room(server, process["id"], shown)

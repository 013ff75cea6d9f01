"""A full disk under the data directory: no lies, nothing left running, no glued lines.

A real full filesystem: a small tmpfs mounted for the test (needs root, as CI runs).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Server, py, start, wait_exited, wait_for
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
        filler = fill(small_fs)
        for _ in range(3):
            response = client.post("/v1/process", json={"command": "sleep", "args": ["600"]})
            assert response.status_code == 507, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert "full" in response.json()["detail"]
        assert client.get("/v1/process").json()["processes"] == []
        assert server.leftovers() == {}  # nothing runs that no record shows
        filler.unlink()
        process = start(client, py("print('room again')"))
        wait_exited(client, process["id"])
        wait_for(lambda: "room again" in client.get(f"/v1/process/{process['id']}/logs").text, 10, "its output")


def test_an_exit_on_a_full_disk_is_never_shown_as_running(
    server_factory: Callable[..., Server], small_fs: Path
) -> None:
    server = server_factory(data_dir=small_fs / "data")
    stop = small_fs / "go"
    with server.client() as client:
        process = start(client, py(f"import os, time\nwhile not os.path.exists({str(stop)!r}): time.sleep(0.01)"))
        filler = fill(small_fs)
        stop.touch()  # a directory entry fits where a page does not
        try:
            done = wait_exited(client, process["id"])
            assert done["status"] == "stopped"  # the exit code could not be recorded: unknown, never "running"
            assert client.delete(f"/v1/process/{process['id']}").status_code == 204
        finally:
            filler.unlink()

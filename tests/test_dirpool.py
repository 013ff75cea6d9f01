"""Process directories made ahead (``engine/dirpool.py``): a start takes one, the pool
fills again, and nothing of it ever shows as a process or outlives a restart."""

from __future__ import annotations

from pathlib import Path

from conftest import Server, start, wait_exited, wait_for
from sandbox_agent.engine.dirpool import POOL_DIR, POOL_SIZE
from sandbox_agent.supervisor.ondisk import EXIT_FILE, EXIT_RECORD_SIZE, LOG_FILES


def ready(server: Server) -> dict[int, Path]:
    """The pool's ready directories, by inode."""
    pool = server.data_dir / "processes" / POOL_DIR
    if not pool.is_dir():
        return {}
    return {entry.stat().st_ino: entry for entry in pool.iterdir() if entry.name.startswith("ready-")}


def check_made_ahead(directory: Path) -> None:
    """What the pool puts in a directory: the three logs, empty, and a blank exit.rec."""
    assert sorted(p.name for p in directory.iterdir()) == sorted([*LOG_FILES.values(), EXIT_FILE])
    for name in LOG_FILES.values():
        assert (directory / name).stat().st_size == 0
    assert (directory / EXIT_FILE).read_bytes() == b" " * (EXIT_RECORD_SIZE - 1) + b"\n"


def test_a_start_takes_a_ready_directory_and_the_pool_fills_again(server: Server) -> None:
    made = wait_for(lambda: (found := ready(server)) and len(found) == POOL_SIZE and found, 10, "a full pool")
    for directory in made.values():
        check_made_ahead(directory)
    with server.client() as client:
        process = start(client, {"command": "sh", "args": ["-c", "echo out; echo err >&2; exit 5"]})
        directory = server.data_dir / "processes" / process["id"]
        assert directory.stat().st_ino in made  # renamed into place, not made
        assert wait_exited(client, process["id"])["exitCode"] == 5
        logs = client.get(f"/v1/process/{process['id']}/logs").json()["content"]
        assert "[stdout] out" in logs
        assert "[stderr] err" in logs
        wait_for(lambda: len(ready(server)) == POOL_SIZE, 10, "the pool to fill again")
        assert set(ready(server)).isdisjoint({directory.stat().st_ino})
        listed = [p["id"] for p in client.get("/v1/process").json()["processes"]]
        assert listed == [process["id"]]


def test_a_server_clears_the_pool_an_earlier_one_left(server: Server) -> None:
    processes = server.data_dir / "processes"
    left = wait_for(lambda: (found := ready(server)) and len(found) == POOL_SIZE and found, 10, "a full pool")
    server.crash()
    for directory in left.values():
        (directory / "left-behind").write_text("")  # a ready one an earlier server made
    # What a crash may leave: a directory half made, and an earlier pool not yet removed.
    half = processes / POOL_DIR / "tmp-7"
    half.mkdir()
    (half / "stdout.log").write_text("")
    old = processes / f"{POOL_DIR}-old-12345"
    (old / "ready-3").mkdir(parents=True)
    server.start()
    wait_for(lambda: len(ready(server)) == POOL_SIZE and not old.exists(), 10, "a fresh pool")
    assert not half.exists()
    for directory in ready(server).values():
        check_made_ahead(directory)  # made by this server: no marker in any
    assert sorted(p.name for p in processes.iterdir()) == [POOL_DIR]
    with server.client() as client:
        assert client.get("/v1/process").json()["processes"] == []
        process = start(client, {"command": "true"})
        assert wait_exited(client, process["id"])["exitCode"] == 0

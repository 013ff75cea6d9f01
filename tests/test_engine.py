"""The engine used directly from Python, without HTTP: the embedding use case."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import errno
import gc
import json
import os
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import MARKER, marked_pids, wait_for
from sandbox_agent._exceptions import BadRequest, NotFound, ServiceUnavailable
from sandbox_agent.engine import ProcessManager
from sandbox_agent.engine import SpawnRequest as StartProcess
from sandbox_agent.engine import launcher as _launcher
from sandbox_agent.engine import run as _run
from sandbox_agent.engine.logs import feed as _follow
from sandbox_agent.engine.logs import watch as _watch
from sandbox_agent.supervisor import launcher as _spare_launcher


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Everything started in the test inherits the marker; none may outlive it."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, value)
    yield value
    deadline = time.monotonic() + 10
    while marked_pids(value):
        assert time.monotonic() < deadline, f"left running: {marked_pids(value)}"
        time.sleep(0.02)


def test_spawn_follow_and_exit_in_process(tmp_path: Path, marker: str) -> None:
    async def main() -> tuple[list[_follow.FollowEvent], list[bytes]]:
        manager = ProcessManager(tmp_path / "data")
        await manager.start()
        try:
            code = "import sys\nfor i in range(3): print(i, flush=True)\nsys.exit(4)"
            process = await manager.spawn(StartProcess(command=sys.executable, args=["-u", "-c", code]))
            events = []
            snapshot_raw: list[bytes] = []
            async with asyncio.timeout(15):
                async for event in await manager.follow(process.id, stream="stdout"):
                    if isinstance(event, _follow.Snapshot):
                        snapshot_raw.append(event.raw)  # readable until the next event is asked for
                    events.append(event)
            running = await manager.spawn(StartProcess(command="sleep", args=["600"]))
            try:
                with pytest.raises(BadRequest, match="still running"):
                    await manager.delete(running.id)
            finally:
                manager.kill(running.id)
                async with asyncio.timeout(15):
                    assert (await manager.wait(running.id)).status == "killed"
            await manager.delete(process.id)
            with pytest.raises(NotFound):
                manager.get(process.id)
            return events, snapshot_raw
        finally:
            await manager.close()

    events, snapshot_raw = asyncio.run(main())
    # The process may print before the follow begins: the snapshot has those lines, the
    # live events the rest, and together every line once.
    assert isinstance(events[0], _follow.Snapshot)
    live = b"".join(s.raw for e in events if isinstance(e, _follow.Lines) for s in e.segments)
    lines = (snapshot_raw[0] + live).splitlines()
    assert [line[27:] for line in lines] == [b"0", b"1", b"2"]
    assert isinstance(events[-1], _follow.Exit)
    assert events[-1].state["exitCode"] == 4


def test_follow_works_without_inotify(tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_watch.Inotify, "create", classmethod(lambda cls: None))

    async def main() -> list[bytes]:
        manager = ProcessManager(tmp_path / "data")
        await manager.start()
        try:
            code = "import time\nfor i in range(20):\n    print(i, flush=True)\n    time.sleep(0.01)"
            process = await manager.spawn(StartProcess(command=sys.executable, args=["-u", "-c", code]))
            raw = []
            async with asyncio.timeout(15):
                async for event in await manager.follow(process.id, stream="stdout"):
                    if isinstance(event, _follow.Snapshot):
                        raw.append(event.raw)
                    elif isinstance(event, _follow.Lines):
                        raw.extend(segment.raw for segment in event.segments)
            return b"".join(raw).splitlines()
        finally:
            await manager.close()

    lines = asyncio.run(main())
    assert [line[27:] for line in lines] == [str(i).encode() for i in range(20)]


def test_inotify_read_returns_every_event_across_calls_while_the_descriptor_is_readable(tmp_path: Path) -> None:
    """A read stops once a buffer came back with room to spare; whatever was queued
    beyond one buffer, or came after, is still there and the descriptor says so (the
    loop watches it): no event is lost or seen twice."""
    import select

    from sandbox_agent.engine.logs.inotify import IN_CLOSE_WRITE, Inotify

    notify = Inotify.create()
    assert notify is not None
    try:
        notify.add_watch(str(tmp_path), IN_CLOSE_WRITE)
        # 400 events of 16 + 208 bytes: more than one 64 KiB read holds.
        names = {(f"{i:04d}" + "n" * 200).encode() for i in range(400)}
        for name in names:
            (tmp_path / name.decode()).write_bytes(b"")
        seen: list[bytes] = []
        while select.select([notify.fd], [], [], 0)[0]:
            seen += [event[2] for event in notify.read()]
        assert sorted(seen) == sorted(names)
        assert notify.read() == []
    finally:
        notify.close()


def test_an_idle_follow_sends_keepalives_then_sees_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(b"[2026-01-30T12:32:45.123Z] [stdout] first\n")

    def append(data: bytes) -> None:
        with open(log, "ab") as f:
            f.write(data)

    async def main() -> list[type]:
        feed = _follow.Feed(str(log))
        kinds: list[type] = []
        try:
            async with asyncio.timeout(10):
                async for event in _follow.follow_feed(feed, tail=None, resume_from=None, keepalive=0.02):
                    kinds.append(type(event))
                    if isinstance(event, _follow.Keepalive) and kinds.count(_follow.Keepalive) == 2:
                        append(b"[2026-01-30T12:32:46.000Z] [stdout] second\n")
                        feed.catch_up()
                    if isinstance(event, _follow.Lines):
                        return kinds
        finally:
            feed.close()
        return kinds

    kinds = asyncio.run(main())
    assert kinds == [_follow.Snapshot, _follow.Keepalive, _follow.Keepalive, _follow.Lines]


def test_a_deleted_process_is_held_by_nothing(tmp_path: Path, marker: str) -> None:
    """Once a process exited and was deleted, the engine keeps no reference to its record
    (the event history keeps copies of its own): a server started on by the hundred
    thousand must not grow by a record for each (it did, through the set of records that
    may run, which only a start with a limit on running processes pruned)."""

    async def main() -> list[list[str]]:
        manager = ProcessManager(tmp_path / "data")
        await manager.start()
        try:
            held = []
            for _ in range(3):
                record = await manager.spawn(StartProcess(command="true"))
                await manager.wait(record.id)
                await manager.delete(record.id)
                gc.collect()
                holders = [ref for ref in gc.get_referrers(record) if not isinstance(ref, types.FrameType)]
                held.append([type(ref).__name__ for ref in holders])
            return held
        finally:
            await manager.close()

    assert asyncio.run(main()) == [[], [], []]


def test_a_bare_command_is_the_first_regular_executable_file_in_path(tmp_path: Path) -> None:
    from sandbox_agent.engine import validate

    plain, folder, found, later, here = (tmp_path / name for name in ("plain", "folder", "found", "later", "here"))
    for directory in (plain, folder, found, later, here):
        directory.mkdir()
    (plain / "tool").write_text("not executable\n")
    (folder / "tool").mkdir()  # a directory passes an access check for X_OK, and is no program
    for directory in (found, later, here):
        (directory / "tool").write_text("#!/bin/sh\n")
        (directory / "tool").chmod(0o755)
    path = f"{plain}:{folder}:{found}:{later}"
    assert validate.resolve_command("tool", str(tmp_path), {"PATH": path}) == str(found / "tool")
    # An empty entry, or a relative one, is the command's working directory.
    assert validate.resolve_command("tool", str(here), {"PATH": f"{plain}::{found}"}) == str(here / "tool")
    assert validate.resolve_command("tool", str(tmp_path), {"PATH": f"{plain}:here"}) == str(here / "tool")
    with pytest.raises(BadRequest, match="not found in PATH"):
        validate.resolve_command("tool", str(tmp_path), {"PATH": f"{plain}:{folder}"})


def test_a_full_inotify_queue_makes_every_feed_look_for_itself(tmp_path: Path) -> None:
    """When the kernel's event queue overflows, the events it dropped (a log's writes, a
    rotation) are nobody's news: the overflow event makes every watched feed look at
    its file, or a follower would wait for lines already written until the next event."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    log, noise_a, noise_b = (tmp_path / name for name in ("combined.log", "a.log", "b.log"))
    for path in (log, noise_a, noise_b):
        path.write_bytes(b"")
    line = b"[2026-01-30T12:32:46.000Z] [stdout] written while the queue was full\n"

    def overflow_then_write() -> None:
        # Alternate between two files: a file's events in a row would be merged into one.
        # The loop does not run meanwhile, so the queue fills and overflows.
        with open(noise_a, "ab", buffering=0) as a, open(noise_b, "ab", buffering=0) as b:
            for _ in range(limit // 2 + 64):
                a.write(b"x")
                b.write(b"x")
        with open(log, "ab") as f:
            f.write(line)  # its event is dropped: the queue is full

    async def main() -> bytes:
        watcher = _watch.LogWatcher()
        watcher.start()
        feeds = [_follow.Feed(str(path)) for path in (log, noise_a, noise_b)]
        try:
            for feed in feeds:
                watcher.watch(feed)
            async with asyncio.timeout(10):
                async for event in _follow.follow_feed(feeds[0], tail=None, resume_from=None, keepalive=30):
                    if isinstance(event, _follow.Snapshot):
                        overflow_then_write()
                    elif isinstance(event, _follow.Lines):
                        return b"".join(segment.raw for segment in event.segments)
            return b""
        finally:
            for feed in feeds:
                watcher.unwatch(feed)
                feed.close()
            await watcher.close()

    assert asyncio.run(main()) == line


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _state(pid: int) -> bytes | None:
    """The state letter of ``pid`` in /proc (b"Z": a zombie), None once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :][:1]


def _gone(pid: int) -> bool:
    """``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    return _state(pid) in (None, b"Z")


class _RecordingGuard:
    """A run guard that only notes what it is told: ``+pid`` at the start, ``-pid`` at the end."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def guard_run(self, pid: int, start_ticks: int | None) -> None:
        self.told.append(f"+{pid}")

    def release_run(self, pid: int) -> None:
        self.told.append(f"-{pid}")


def test_a_run_whose_command_left_a_child_holding_its_pipes(marker: str) -> None:
    """The command exits at once, its background child keeps its output pipes: the run
    answers at its deadline with the command's exit and output, not as timed out, and
    the child is killed with the command's group."""

    async def main() -> _run.RunResult:
        return await _run.run(
            _run.RunRequest("sh", ["-c", "sleep 60 & echo $!; exit 3"], timeout_ms=300), base_env=dict(os.environ)
        )

    before = _open_fds()
    began = time.monotonic()
    result = asyncio.run(main())
    assert 0.25 <= time.monotonic() - began < 5
    assert (result.exit_code, result.timed_out, result.stderr) == (3, False, b"")
    child = int(result.stdout)
    wait_for(lambda: _gone(child), 10, f"the run's background child {child} to be killed")
    assert _open_fds() == before


def test_a_run_whose_caller_goes_away_is_killed_with_its_group(marker: str) -> None:
    """Cancelled (the client hung up, the server closes): the run's whole group is killed
    and reaped before the cancellation goes on, and nothing of it stays open."""

    async def main() -> int:
        task = asyncio.create_task(
            _run.run(_run.RunRequest("sh", ["-c", "sleep 60 & echo $!; sleep 60"]), base_env=dict(os.environ))
        )
        await asyncio.sleep(0)  # the run starts
        started = marked_pids(marker)
        deadline = time.monotonic() + 10
        while len(started) < 3:  # sh and its two sleeps
            assert time.monotonic() < deadline, f"the run did not start: {started}"
            await asyncio.sleep(0.01)
            started = marked_pids(marker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(started)

    before = _open_fds()
    assert asyncio.run(main()) == 3
    wait_for(lambda: not marked_pids(marker), 10, "the run's group to be killed")
    assert _open_fds() == before


def test_runs_in_a_row_leak_nothing(marker: str) -> None:
    """The usual course (exit and end of output together), many times: each run reaps its
    command and closes its pipes and its pidfd."""

    async def main() -> list[_run.RunResult]:
        env = dict(os.environ)
        return [
            await _run.run(_run.RunRequest("sh", ["-c", f"echo {i}; echo e >&2; exit {i % 3}"]), None, env)
            for i in range(50)
        ]

    before = _open_fds()
    results = asyncio.run(main())
    assert [(r.exit_code, r.stdout, r.stderr, r.timed_out) for r in results] == [
        (i % 3, b"%d\n" % i, b"e\n", False) for i in range(50)
    ]
    assert _open_fds() == before


@pytest.mark.parametrize("failing", ["pidfd", "pipe watch"])
def test_a_run_that_cannot_be_watched_leaves_nothing(
    marker: str, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Out of descriptors for the pidfd that watches the exit (another thread took the
    last ones), or the loop refusing to watch a pipe (epoll's watch limit): the command
    is killed and reaped, its pipes closed, the launcher told it ended. A shortage of
    descriptors is the 503 it is, not a 500."""

    if failing == "pidfd":

        def no_descriptor(pid: int, flags: int = 0) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(os, "pidfd_open", no_descriptor)
        expected: type[Exception] = ServiceUnavailable
    else:
        watched: list[int] = []
        add_reader = asyncio.selector_events.BaseSelectorEventLoop.add_reader

        def refusing(self: asyncio.AbstractEventLoop, fd: int, callback: Any, *args: Any) -> None:
            watched.append(fd)
            if len(watched) == 2:  # the stderr pipe's
                raise OSError(errno.ENOSPC, "No space left on device")
            add_reader(self, fd, callback, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "add_reader", refusing)
        expected = OSError
    guard = _RecordingGuard()
    before = _open_fds()
    with pytest.raises(expected):
        asyncio.run(_run.run(_run.RunRequest("sleep", ["60"]), guard, dict(os.environ)))
    assert _open_fds() == before
    assert len(guard.told) == 2
    assert guard.told[0] == "+" + guard.told[1][1:]
    with pytest.raises(ChildProcessError):  # reaped already, by the run
        os.waitpid(int(guard.told[1][1:]), os.WNOHANG)


def test_the_spares_rehearsal_has_the_shape_of_a_real_spawn_request(
    tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spare parses a made-up spawn request while it waits, so that the real one's parse
    writes to pages it has already copied: a field added to the real request and not to
    the rehearsal would quietly cost every start its first parse of that field again."""
    sent: list[dict[str, object]] = []
    real_request = _launcher.LauncherClient.request

    async def recording(self: _launcher.LauncherClient, message: dict[str, object]) -> dict[str, object]:
        if message.get("op") == "spawn":
            sent.append(message)
        return await real_request(self, message)

    monkeypatch.setattr(_launcher.LauncherClient, "request", recording)

    async def main() -> None:
        manager = ProcessManager(tmp_path / "data")
        await manager.start()
        try:
            process = await manager.spawn(StartProcess(command="true"))
            async with asyncio.timeout(15):
                await manager.wait(process.id)
        finally:
            await manager.close()

    asyncio.run(main())
    rehearsal = json.loads(_spare_launcher._REHEARSAL)
    assert len(sent) == 1
    assert set(rehearsal) == {*sent[0], "req"}
    for name, value in sent[0].items():
        assert type(rehearsal[name]) is type(value) or value is None, name


def test_a_run_keeps_its_exited_command_unreaped_while_its_group_may_be_killed(marker: str) -> None:
    """The command exited but left a child holding its pipes: until the run has killed
    what is left of the group, the command stays a zombie, so that the group's id (its
    pid) cannot be given to another process meanwhile; once answered, it is reaped."""
    guard = _RecordingGuard()

    async def main() -> tuple[_run.RunResult, bool]:
        run = asyncio.create_task(
            _run.run(_run.RunRequest("sh", ["-c", "sleep 60 & exit 3"], timeout_ms=2000), guard, dict(os.environ))
        )
        seen_zombie = False
        deadline = time.monotonic() + 10
        while not run.done() and time.monotonic() < deadline:
            if guard.told and _state(int(guard.told[0][1:])) == b"Z":
                seen_zombie = True
                break
            await asyncio.sleep(0.005)
        return await run, seen_zombie

    result, seen_zombie = asyncio.run(main())
    assert result.exit_code == 3
    assert seen_zombie, "the command was reaped before the run was done with its group"
    assert _state(int(guard.told[0][1:])) is None, "the command was never reaped"

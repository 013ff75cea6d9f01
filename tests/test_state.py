"""State files are replaced atomically: a crash at any instant leaves old or new, whole."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_for
from sandbox_agent.supervisor.ondisk import (
    EXIT_FILE,
    EXIT_RECORD_SIZE,
    encode_exit_record,
    fill_exit_record,
    make_exit_record,
    read_exit_record,
    read_json,
    read_state_with_exit,
    write_json_atomic,
)

WRITER = """
import sys
from sandbox_agent.supervisor.ondisk import write_json_atomic
path, after = sys.argv[1], sys.argv[2] == "after"
i = 0
while True:
    write_json_atomic(path, {"i": i, "pad": "x" * (i * 37 % 20000)}, sync=not after, sync_after=after)
    i += 1
"""


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    write_json_atomic(path, {"a": 1, "b": "é"})
    assert read_json(path) == {"a": 1, "b": "é"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def _open_files_of(path: Path) -> list[str]:
    """The targets of this process's descriptors that are ``path`` (or were, if removed)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith(str(path)):
            found.append(str(target))
    return found


def test_the_replaced_record_is_freed_after_the_rename_in_every_way(tmp_path: Path) -> None:
    """The old file is held open across the rename and then closed, here or in a thread
    (``aside``), and the new one synced before or after the rename: each way the new one
    is in place, nothing else is left, and no descriptor of the old or the new one stays
    open."""
    path = tmp_path / "state.json"
    ways = [(False, False, False), (False, False, True), (True, False, True), (False, True, False), (False, True, True)]
    for i, (sync, sync_after, aside) in enumerate(ways):
        write_json_atomic(str(path), {"i": i}, sync=sync, sync_after=sync_after, aside=aside)
        assert json.loads(path.read_text()) == {"i": i}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    wait_for(lambda: not _open_files_of(path), 10, "the replaced records' descriptors to be closed")


@pytest.mark.parametrize("sync", ["before", "after"])
def test_a_writer_killed_at_any_instant_leaves_a_whole_file(tmp_path: Path, sync: str) -> None:
    """Synced before the rename or after it (as a supervisor writes the exit), a record
    is never torn by a crash."""
    path = tmp_path / "state.json"
    rng = random.Random(7)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), sync])
        try:
            threshold = rng.randrange(5, 400)

            def past_threshold(threshold: int = threshold) -> bool:
                try:
                    return int(json.loads(path.read_bytes())["i"]) >= threshold
                except (FileNotFoundError, ValueError):
                    return False

            wait_for(past_threshold, 30, "the writer to get going")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        data = json.loads(path.read_bytes())  # never torn
        assert data["pad"] == "x" * (data["i"] * 37 % 20000)
        for leftover in tmp_path.glob("*.tmp"):
            leftover.unlink()  # a crash may leave the temporary file: the server sweeps those


def test_an_exit_record_reads_as_the_exit_or_as_none_never_as_another(tmp_path: Path) -> None:
    directory = str(tmp_path)
    make_exit_record(directory)
    size = (tmp_path / EXIT_FILE).stat().st_size
    assert size == EXIT_RECORD_SIZE
    assert read_exit_record(directory) is None  # blank: no exit yet
    exit_fields = {"status": "killed", "exitCode": None, "exitSignal": 9, "stoppedAt": 1795817035.25}
    full = encode_exit_record(exit_fields)
    assert len(full) == EXIT_RECORD_SIZE
    # A write torn at any byte leaves the JSON's start and blanks after: never valid.
    blank = (tmp_path / EXIT_FILE).read_bytes()
    for cut in range(len(full.rstrip())):
        (tmp_path / EXIT_FILE).write_bytes(full[:cut] + blank[cut:])
        assert read_exit_record(directory) is None
    fill_exit_record(directory, {**exit_fields, "pid": 4242})
    assert (tmp_path / EXIT_FILE).stat().st_size == size  # in place, not a byte more
    assert read_exit_record(directory) == exit_fields
    # Over a running state record, the exit record wins; over an exited one, it is moot.
    running = {"id": "x", "command": "c", "args": [], "status": "running", "startedAt": 1.0}
    write_json_atomic(str(tmp_path / "state.json"), running)
    assert read_state_with_exit(directory) == ({**running, **exit_fields}, True)
    write_json_atomic(str(tmp_path / "state.json"), {**running, **exit_fields, "exitSignal": 15})
    assert read_state_with_exit(directory) == ({**running, **exit_fields, "exitSignal": 15}, False)

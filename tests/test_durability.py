"""SPEC section 6: processes outlive a restart or a crash of the server, and are adopted."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, py, sse_events, start, supervisor_of, wait_exited, wait_for, wait_log

# Counts until a stop file appears, then exits with 3.
COUNTER = """
import os, sys, time
stop = sys.argv[1]
i = 0
while not os.path.exists(stop):
    print(f'n={i}', flush=True)
    i += 1
    time.sleep(0.001)
print('bye', flush=True)
raise SystemExit(3)
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def counter_lines(client: httpx.Client, process_id: str) -> list[str]:
    content = client.get(f"/v1/process/{process_id}/logs", params={"stream": "stdout"}).json()["content"]
    return content.splitlines()


def check_counter(lines: list[str]) -> None:
    """n=0, n=1, ... then bye: nothing lost, nothing repeated, time never going back."""
    bodies = [line[27:] for line in lines]
    assert bodies[-1] == "bye"
    assert bodies[:-1] == [f"n={i}" for i in range(len(bodies) - 1)]
    stamps = [datetime.fromisoformat(line[1:24].replace("Z", "+00:00")) for line in lines]
    assert stamps == sorted(stamps)


def start_counter(client: httpx.Client, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    stop = tmp_path / "stop"
    body = py(COUNTER)
    body["args"].append(str(stop))
    return start(client, body), stop


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_a_logging_process_survives_and_its_exit_while_down_is_recorded(
    server: Server, tmp_path: Path, how: signal.Signals
) -> None:
    with server.client() as client:
        process, stop = start_counter(client, tmp_path)
        wait_log(client, process["id"], "n=200\n")
    pid = process["pid"]

    server.restart(how)
    with server.client() as client:
        again = client.get(f"/v1/process/{process['id']}").json()
        assert again["status"] == "running"
        assert again["pid"] == pid
        before = len(counter_lines(client, process["id"]))
        wait_for(lambda: len(counter_lines(client, process["id"])) > before + 200, 10, "output after the restart")

    server.stop(how)
    down_count = len((Path(process["logPaths"]["stdout"])).read_bytes().splitlines())
    # While no server is up: the output keeps landing, then the process exits.
    wait_for(
        lambda: len(Path(process["logPaths"]["stdout"]).read_bytes().splitlines()) > down_count + 200,
        10,
        "output while the server is down",
    )
    stop.touch()
    wait_for(lambda: not alive(pid), 10, "the process to exit while the server is down")
    server.start()
    with server.client() as client:
        final = wait_exited(client, process["id"])
        assert (final["status"], final["exitCode"]) == ("stopped", 3)
        check_counter(counter_lines(client, process["id"]))
        combined = client.get(f"/v1/process/{process['id']}/logs").json()["content"].splitlines()
        assert len(combined) == len(counter_lines(client, process["id"]))


def test_every_endpoint_works_on_an_adopted_process(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        process, stop = start_counter(client, tmp_path)
        sleeper = start(client, {"command": "sleep", "args": ["600"]})
        wait_log(client, process["id"], "n=10\n")
    server.restart(signal.SIGKILL)
    with server.client() as client:
        ids = [p["id"] for p in client.get("/v1/process").json()["processes"]]
        assert ids == [sleeper["id"], process["id"]]
        with client.stream(
            "GET", f"/v1/process/{process['id']}/logs", params={"follow": "true", "stream": "stdout", "tail": 0}
        ) as response:
            events = sse_events(response)
            assert json.loads(next(events).data)["lines"] == 0
            live = next(events)
            assert live.data[27:].startswith("n=")
            stop.touch()
            rest = []
            for event in events:
                rest.append(event)
                if event.event == "exit":
                    break
        assert json.loads(rest[-1].data)["exitCode"] == 3
        assert rest[-2].data.endswith("bye")
        assert client.post(f"/v1/process/{sleeper['id']}/stop").status_code == 204
        final = wait_exited(client, sleeper["id"])
        assert (final["status"], final["exitSignal"]) == ("stopped", 15)
        for process_id in ids:
            assert client.delete(f"/v1/process/{process_id}").status_code == 204
        assert client.get("/v1/process").json() == {"processes": []}


def test_kill_works_after_a_crash(server: Server) -> None:
    with server.client() as client:
        process = start(client, {"command": "sleep", "args": ["600"]})
    server.restart(signal.SIGKILL)
    with server.client() as client:
        client.post(f"/v1/process/{process['id']}/kill")
        assert wait_exited(client, process["id"])["status"] == "killed"


def test_a_restart_removes_only_the_state_writes_of_dead_writers(server: Server) -> None:
    """A state write cut short leaves ``state.json.<pid>.tmp``; a restarted server removes
    those, but not the one of a live supervisor, which may be writing it at that moment
    (its rename would fail, and its exit go to the exit record instead)."""
    with server.client() as client:
        process = start(client, {"command": "sleep", "args": ["600"]})
    directory = server.data_dir / "processes" / process["id"]
    supervisor = supervisor_of(server, process["id"])
    server.stop()
    writing = directory / f"state.json.{supervisor}.tmp"
    writing.write_text("{")
    dead = directory / "state.json.999999999.tmp"
    dead.write_text("{")
    server.start()
    assert writing.exists()
    assert not dead.exists()
    writing.unlink()  # as the supervisor's own next write would replace it
    with server.client() as client:
        client.post(f"/v1/process/{process['id']}/kill")
        assert wait_exited(client, process["id"])["status"] == "killed"


def test_machine_restart_leaves_stopped_records_not_running_ones(server: Server) -> None:
    with server.client() as client:
        process = start(client, {"command": "sleep", "args": ["600"]})
    supervisor = supervisor_of(server, process["id"])
    server.stop(signal.SIGKILL)
    # A machine restart takes the supervisor and the process with it, unannounced.
    os.kill(supervisor, signal.SIGKILL)
    os.kill(process["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(supervisor) and not alive(process["pid"]), 10, "both to be gone")
    server.start()
    with server.client() as client:
        final = client.get(f"/v1/process/{process['id']}").json()
        assert (final["status"], final["exitCode"]) == ("stopped", None)
        assert "stoppedAt" in final
    server.restart()
    with server.client() as client:
        assert client.get(f"/v1/process/{process['id']}").json() == final


def test_a_record_from_another_boot_is_settled(server: Server) -> None:
    with server.client() as client:
        process = start(client, {"command": "sleep", "args": ["600"]})
    server.stop()
    state_path = server.data_dir / "processes" / process["id"] / "state.json"
    state = json.loads(state_path.read_text())
    supervisor = int(state["supervisorPid"])
    # As if written before a reboot: the same pid may now be anything.
    state["bootId"] = "00000000-0000-0000-0000-000000000000"
    state_path.write_text(json.dumps(state))
    server.start()
    with server.client() as client:
        assert client.get(f"/v1/process/{process['id']}").json()["status"] == "stopped"
    os.kill(supervisor, signal.SIGKILL)
    os.kill(process["pid"], signal.SIGKILL)


def test_a_supervisor_killed_under_a_running_server_is_noticed(server: Server, client: httpx.Client) -> None:
    process = start(client, {"command": "sleep", "args": ["600"]})
    supervisor = supervisor_of(server, process["id"])
    os.kill(supervisor, signal.SIGKILL)
    final = wait_exited(client, process["id"])
    assert (final["status"], final["exitCode"]) == ("stopped", None)
    # Unwatched, it would run on unseen: the server ends it.
    wait_for(lambda: not alive(process["pid"]), 10, "the orphaned process to be killed")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_a_follow_cut_by_a_restart_resumes_exactly(server: Server, tmp_path: Path, how: signal.Signals) -> None:
    with server.client() as client:
        process, stop = start_counter(client, tmp_path)
        seen: list[str] = []
        last_id = None
        with client.stream(
            "GET", f"/v1/process/{process['id']}/logs", params={"follow": "true", "stream": "stdout"}
        ) as response:
            events = sse_events(response)
            snapshot = next(events)
            seen.extend(json.loads(snapshot.data)["content"].splitlines())
            last_id = snapshot.id
            for event in events:
                seen.append(event.data)
                last_id = event.id
                if len(seen) >= 100:
                    break
            server.stop(how)
            # What was already sent may still arrive; then the stream ends (cleanly after
            # SIGTERM, cut after SIGKILL): it must not hang.
            try:
                for event in events:
                    seen.append(event.data)
                    last_id = event.id
            except httpx.HTTPError:
                pass
    server.start()
    with server.client() as client:
        stop.touch()
        with client.stream(
            "GET",
            f"/v1/process/{process['id']}/logs",
            params={"follow": "true", "stream": "stdout"},
            headers={"Last-Event-ID": str(last_id)},
        ) as response:
            for event in sse_events(response):
                if event.event == "exit":
                    break
                seen.append(event.data)
        check_counter(seen)


def parent_and_state(pid: int) -> tuple[int, str]:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[1]), fields[0].decode()


def test_orphans_left_by_a_process_are_adopted_and_reaped(server: Server, client: httpx.Client) -> None:
    # bash starts a background sleep that does not hold its output, and exits: the sleep
    # stays under the supervisor (their subreaper, which waits for it); when the
    # supervisor itself dies, the server adopts the sleep.
    process = start(client, {"command": "bash", "args": ["-c", "sleep 600 >/dev/null 2>&1 & echo $!"]})
    wait_exited(client, process["id"])
    orphan = int(wait_log(client, process["id"], "\n", stream="stdout").split()[-1])
    supervisor = supervisor_of(server, process["id"])
    assert parent_and_state(orphan)[0] == supervisor
    os.kill(supervisor, signal.SIGKILL)
    assert server.proc is not None
    pid = server.proc.pid
    # Adopted by the server (a subreaper), not init.
    wait_for(lambda: parent_and_state(orphan)[0] == pid, 10, "the orphan to be adopted by the server")
    # Out of the supervisor's reach now: no longer shown as its process's descendant.
    wait_for(
        lambda: "descendantsRunning" not in client.get(f"/v1/process/{process['id']}").json(), 10, "the flag to go"
    )
    os.kill(orphan, signal.SIGKILL)
    # Reaped, not left a zombie.
    wait_for(lambda: not Path(f"/proc/{orphan}").exists(), 10, "the orphan to be reaped")


def test_supervisors_killed_around_their_exit_never_lose_or_change_a_shown_exit(server: Server, tmp_path: Path) -> None:
    """A supervisor tells the server the exit, then writes it: killed at random moments
    around its command's exit (before the tell, between the tell and the record, after
    both), each process still ends shown as exited with its true code or with none, the
    record on disk says the same, and a restart shows the same again: an exit once shown
    is never lost or changed."""
    rng = random.Random(11)
    shown: dict[str, dict[str, Any]] = {}
    with server.client() as client:
        for i in range(40):
            code = rng.randrange(256)
            go = tmp_path / f"go{i}"
            body = py(EXIT_ON_GO)
            body["args"] += [str(go), str(code)]
            process = start(client, body)
            supervisor = supervisor_of(server, process["id"])
            wait_log(client, process["id"], "waiting")
            go.touch()
            # Spread over the moments of the command's exit and its record (all within
            # a millisecond or two of the go).
            deadline = time.perf_counter() + rng.uniform(0, 0.005)
            while time.perf_counter() < deadline:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor, signal.SIGKILL)
            final = wait_exited(client, process["id"])
            assert final["exitCode"] in (code, None), final
            assert final["exitSignal"] is None
            shown[process["id"]] = final
        for process_id, final in shown.items():
            wait_for(lambda i=process_id: "stateUnsaved" not in client.get(f"/v1/process/{i}").json(), 10, "records")
            record = json.loads((server.data_dir / "processes" / process_id / "state.json").read_text())
            assert (record["status"], record["exitCode"]) == ("stopped", final["exitCode"])
    server.restart()
    with server.client() as client:
        for process_id, final in shown.items():
            assert client.get(f"/v1/process/{process_id}").json()["exitCode"] == final["exitCode"]


#: Says it is waiting, waits for a file, then exits with the code it was given.
EXIT_ON_GO = """
import os, sys, time
print('waiting', flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.0002)
os._exit(int(sys.argv[2]))
"""

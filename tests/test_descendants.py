"""Descendants a command leaves behind: still logged after it exited, and reached by stop
and kill wherever they went (another session, a double fork).

Real processes through the API; conditions and log lines are waited for, never slept on.
The leak check of the fixtures makes sure nothing is left running.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, sse_events, start, wait_exited, wait_for, wait_log

#: A descendant that keeps writing to the command's stdout until ``stop`` appears.
WRITER = "(i=0; while [ ! -e {stop} ]; do i=$((i+1)); echo child $i; sleep 0.05; done; echo child done) &"


def gone(pid: int) -> bool:
    """Not running: no such process (reaped), and never a zombie left behind."""
    return not Path(f"/proc/{pid}").exists()


def content(client: httpx.Client, process_id: str) -> str:
    response = client.get(f"/v1/process/{process_id}/logs", params={"stream": "stdout", "strip_timestamps": "true"})
    text: str = response.json()["content"]
    return text


def child_lines(client: httpx.Client, process_id: str) -> int:
    return sum(1 for line in content(client, process_id).splitlines() if line.startswith("child "))


def without_descendants(process: dict[str, Any]) -> dict[str, Any]:
    """``process`` as shown once no descendant of it runs any more."""
    assert process["descendantsRunning"] is True
    return {key: value for key, value in process.items() if key != "descendantsRunning"}


def settled(client: httpx.Client, process_id: str) -> dict[str, Any]:
    """The process once no descendant of it runs any more (its supervisor is gone)."""

    def shown() -> dict[str, Any] | None:
        process: dict[str, Any] = client.get(f"/v1/process/{process_id}").json()
        return None if "descendantsRunning" in process else process

    result: dict[str, Any] = wait_for(shown, 10, f"no descendant of {process_id} to run")
    return result


def test_a_descendant_keeps_logging_after_the_command_exited(client: httpx.Client, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    script = WRITER.format(stop=stop) + " echo parent exiting"
    process = start(client, {"command": "bash", "args": ["-c", script]})
    events: list[Any] = []
    with client.stream("GET", f"/v1/process/{process['id']}/logs", params={"follow": "true"}) as response:
        stream = sse_events(response)
        for event in stream:
            events.append(event)
            if event.event == "exit":
                # The exit is the command's, reported while the descendant still writes.
                assert not stop.exists()
                assert "child done" not in content(client, process["id"])
                break
        # The follow ends after its exit event.
        assert list(stream) == []
    assert json.loads(events[-1].data)["exitCode"] == 0
    exited = client.get(f"/v1/process/{process['id']}").json()
    assert (exited["status"], exited["exitCode"], exited["descendantsRunning"]) == ("stopped", 0, True)
    assert "parent exiting" in "\n".join(e.data for e in events)
    # Lines keep coming after the exit, and reach the log.
    seen = child_lines(client, process["id"])
    wait_for(lambda: child_lines(client, process["id"]) > seen + 3, 10, "more lines from the descendant")
    stop.touch()
    wait_log(client, process["id"], "child done")
    # The record stays the command's exit.
    assert settled(client, process["id"]) == without_descendants(exited)
    # A follow of the exited process ends too.
    with client.stream("GET", f"/v1/process/{process['id']}/logs", params={"follow": "true"}) as response:
        assert [e.event for e in sse_events(response)][-1] == "exit"


# bash starts the descendant in its own session and waits: it is out of the command's group.
SETSID = "setsid sh -c 'echo daemon $$; exec sleep 1000' & sleep 1000"
# A double-forked daemon: its parent exits at once, it leaves the group and its output.
DAEMON = "(setsid sh -c 'echo daemon $$; exec sleep 1000 </dev/null >/dev/null 2>&1' &); sleep 1000"
# The same, ignoring SIGTERM: a stop must SIGKILL it after the grace period.
STUBBORN = "(setsid sh -c 'trap \"\" TERM; echo daemon $$; exec sleep 1000 >/dev/null 2>&1' &); sleep 1000"


def daemon_pid(client: httpx.Client, process_id: str) -> int:
    text = wait_log(client, process_id, "daemon ")
    return int(text.split("daemon ")[1].split()[0])


@pytest.mark.parametrize("action", ["stop", "kill"])
@pytest.mark.parametrize("script", [SETSID, DAEMON, STUBBORN], ids=["setsid", "double-fork", "ignores-sigterm"])
def test_stop_and_kill_reach_descendants_that_left_the_group(client: httpx.Client, action: str, script: str) -> None:
    process = start(client, {"command": "bash", "args": ["-c", script], "stopTimeout": 0.5})
    daemon = daemon_pid(client, process["id"])
    assert not gone(daemon)
    assert client.post(f"/v1/process/{process['id']}/{action}").status_code == 204
    final = wait_exited(client, process["id"])
    assert final["status"] == ("killed" if action == "kill" else "stopped")
    wait_for(lambda: gone(daemon), 10, f"descendant {daemon} to be gone after {action}")


@pytest.mark.parametrize("action", ["kill", "stop", "delete"])
def test_kill_reaches_descendants_left_after_the_command_exited(client: httpx.Client, action: str) -> None:
    # The command exits; its daemon still holds the output, so the supervisor runs on.
    script = "setsid sh -c 'echo daemon $$; exec sleep 1000' & echo parent exiting"
    process = start(client, {"command": "bash", "args": ["-c", script]})
    daemon = daemon_pid(client, process["id"])
    exited = wait_exited(client, process["id"])
    assert (exited["status"], exited["exitCode"]) == ("stopped", 0)
    assert not gone(daemon)
    act_on_exited(client, process["id"], action, exited, daemon)


def act_on_exited(client: httpx.Client, process_id: str, action: str, exited: dict[str, Any], daemon: int) -> None:
    """Stop, kill or delete an exited process whose ``daemon`` still runs: it is gone after."""
    shown = client.get(f"/v1/processes/{process_id}").json()
    assert (shown["status"], shown["descendantsRunning"]) == ("exited", True)
    if action == "delete":
        assert client.delete(f"/v1/process/{process_id}").status_code == 204
        assert client.get(f"/v1/process/{process_id}").status_code == 404
    else:
        assert client.post(f"/v1/process/{process_id}/{action}").status_code == 204
        # The record stays the command's exit.
        assert settled(client, process_id) == without_descendants(exited)
        assert "descendantsRunning" not in client.get(f"/v1/processes/{process_id}").json()
    wait_for(lambda: gone(daemon), 10, f"descendant {daemon} to be gone after {action}")


# The command exits at once; its daemon left its group, its session and its output.
CLOSED = "setsid sh -c 'echo daemon $$; exec sleep 1000 </dev/null >/dev/null 2>&1' & echo parent exiting"


@pytest.mark.parametrize("action", ["kill", "stop", "delete"])
def test_a_daemon_that_closed_its_output_is_shown_and_still_reached(client: httpx.Client, action: str) -> None:
    process = start(client, {"command": "bash", "args": ["-c", CLOSED], "stopTimeout": 0.5})
    daemon = daemon_pid(client, process["id"])
    exited = wait_exited(client, process["id"])
    assert (exited["status"], exited["exitCode"]) == ("stopped", 0)
    # Every pipe is closed, the command is gone: its supervisor stays for the daemon.
    wait_log(client, process["id"], "parent exiting")
    assert not gone(daemon)
    exited = client.get(f"/v1/process/{process['id']}").json()
    assert exited["descendantsRunning"] is True
    act_on_exited(client, process["id"], action, exited, daemon)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_a_restart_while_a_descendant_writes_keeps_capturing(
    server: Server, tmp_path: Path, how: signal.Signals
) -> None:
    stop = tmp_path / "stop"
    script = WRITER.format(stop=stop) + " echo parent exiting"
    with server.client() as client:
        process = start(client, {"command": "bash", "args": ["-c", script]})
        exited = wait_exited(client, process["id"])
        wait_log(client, process["id"], "child 3")
    server.restart(how)
    with server.client() as client:
        assert client.get(f"/v1/process/{process['id']}").json() == exited
        assert exited["descendantsRunning"] is True
        seen = child_lines(client, process["id"])
        wait_for(lambda: child_lines(client, process["id"]) > seen + 3, 10, "lines written after the restart")
        stop.touch()
        wait_log(client, process["id"], "child done")
        lines = content(client, process["id"]).splitlines()
        counted = [int(line.split()[1]) for line in lines if line.startswith("child ") and line != "child done"]
        assert counted == list(range(1, len(counted) + 1))  # none lost across the restart
        assert settled(client, process["id"]) == without_descendants(exited)

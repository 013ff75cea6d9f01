"""Restart policies (SPEC section 8), carried out by the supervisor: real processes that
count their runs in a file, so every wait is for a run, a log line or a state; no sleeps.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, py, supervisor_of, wait_exited, wait_for, wait_log
from test_services import _open_events, _read


def runs(counter: Path, fail: int, code: int = 1, then: str = "import signal\nsignal.pause()") -> dict[str, Any]:
    """Counts its runs in ``counter``; runs 0 to ``fail - 1`` print and exit with ``code``,
    later ones print and run ``then`` (by default: stay up). The count is replaced whole
    (written aside, then renamed), so the test never reads it half written."""
    return py(
        f"import os, sys\np = {str(counter)!r}\n"
        "n = int(open(p).read()) if os.path.exists(p) else 0\n"
        "with open(p + '.new', 'w') as f:\n    f.write(str(n + 1))\n"
        "os.replace(p + '.new', p)\n"
        "print('run', n, flush=True)\n"
        f"if n < {fail}:\n    sys.exit({code})\n{then}\n"
    )


def count(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


def stamp(line: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(line[1:24].replace("Z", "+00:00"))


@pytest.fixture
def c(checked_shared_server: Server) -> Iterator[httpx.Client]:
    with checked_shared_server.client() as client:
        yield client


def test_on_failure_restarts_up_to_max_then_exits_with_the_last_code(c: httpx.Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    body = {**runs(counter, fail=99, code=3), "restart": {"policy": "on-failure", "maxRestarts": 2, "backoffMs": 40}}
    started = c.post("/v1/process", json=body).json()
    assert started["restarts"] == 0
    assert started["restart"]["policy"] == "on-failure"
    done = wait_exited(c, started["id"])
    assert (done["status"], done["exitCode"], done["restarts"], count(counter)) == ("stopped", 3, 2, 3)
    log = c.get(f"/v1/process/{started['id']}/logs").json()["content"].splitlines()
    assert [line[27:] for line in log] == [
        "[stdout] run 0",
        "[stdout] [sandbox-agent: restart 1 after exit code 3, backoff 40 ms]",
        "[stdout] run 1",
        "[stdout] [sandbox-agent: restart 2 after exit code 3, backoff 80 ms]",
        "[stdout] run 2",
    ]
    # Loosely: each restart came no sooner than its backoff after the run's last line.
    for before, marker, backoff in ((log[0], log[1], 40), (log[2], log[3], 80)):
        assert (stamp(marker) - stamp(before)).total_seconds() * 1000 >= backoff - 2
    assert "[sandbox-agent: restart 2" in c.get(f"/v1/process/{started['id']}/logs?stream=stdout").json()["content"]
    c.delete(f"/v1/process/{started['id']}")


def test_crashes_twice_then_stays_up_with_restarted_events(c: httpx.Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    body = {**runs(counter, fail=2), "name": "crashy", "restart": {"policy": "on-failure", "backoffMs": 10}}
    with _open_events(c) as events:
        lines = events.iter_lines()
        process = c.post("/v1/processes", json=body).json()
        seen = _read(lines, 3)
        assert [(kind, data["restarts"]) for _id, kind, data in seen] == [
            ("created", 0),
            ("restarted", 1),
            ("restarted", 2),
        ]
        assert seen[2][2]["status"] == "running"
        assert seen[2][2]["pid"] > 0
        wait_log(c, process["id"], "run 2")
        now = c.get("/v1/processes/crashy").json()
        assert (now["status"], now["restarts"], now["pid"]) == ("running", 2, seen[2][2]["pid"])
        assert "restarting" not in now
        stopped = c.post("/v1/processes/crashy/stop").json()
        assert (stopped["status"], stopped["restarts"]) == ("exited", 2)
        # Exited once, at the end; never in between.
        assert [kind for _id, kind, _data in _read(lines, 1)] == ["exited"]
    assert count(counter) == 3
    c.delete(f"/v1/processes/{process['id']}")


def test_always_restarts_after_exit_zero_and_never_does_not(c: httpx.Client, tmp_path: Path) -> None:
    always = tmp_path / "always"
    body = {**runs(always, fail=99, code=0), "restart": {"policy": "always", "maxRestarts": 1, "backoffMs": 10}}
    done = wait_exited(c, c.post("/v1/process", json=body).json()["id"])
    assert (done["exitCode"], done["restarts"], count(always)) == (0, 1, 2)
    on_failure = tmp_path / "on-failure"
    body = {**runs(on_failure, fail=99, code=0), "restart": {"policy": "on-failure", "backoffMs": 10}}
    done = wait_exited(c, c.post("/v1/process", json=body).json()["id"])
    assert (done["exitCode"], done["restarts"], count(on_failure)) == (0, 0, 1)
    never = tmp_path / "never"
    done = wait_exited(c, c.post("/v1/process", json={**runs(never, fail=99), "name": "once"}).json()["id"])
    assert (done["exitCode"], done["restarts"], count(never)) == (1, 0, 1)
    assert "restart" not in done


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stop_or_kill_during_the_backoff_ends_it(
    c: httpx.Client, checked_shared_server: Server, tmp_path: Path, how: str
) -> None:
    counter = tmp_path / "runs"
    body = {**runs(counter, fail=99, code=7), "restart": {"policy": "always", "backoffMs": 30000}}
    process = c.post("/v1/processes", json=body).json()

    def waiting() -> dict[str, Any] | None:
        now: dict[str, Any] = c.get(f"/v1/processes/{process['id']}").json()
        return now if now.get("restarting") else None

    now = wait_for(waiting, what="the backoff")
    assert now["status"] == "running"
    assert "pid" not in now
    ended = c.post(f"/v1/processes/{process['id']}/{how}").json()
    assert (ended["status"], ended["exitCode"], ended["restarts"]) == ("exited", 7, 0)
    assert "restarting" not in ended
    v1 = c.get(f"/v1/process/{process['id']}").json()
    assert v1["status"] == ("stopped" if how == "stop" else "killed")
    assert count(counter) == 1
    # Its supervisor is done too (it used to wait on a poll nothing would wake).
    supervisor = supervisor_of(checked_shared_server, process["id"])
    wait_for(lambda: not _alive(supervisor), what="the supervisor to exit")
    c.delete(f"/v1/processes/{process['id']}")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_restarts_go_on_while_the_server_is_down(server: Server, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    body = {**runs(counter, fail=3), "name": "alone", "restart": {"policy": "on-failure", "backoffMs": 50}}
    with server.client() as c:
        c.post("/v1/process", json=body)
    server.crash()
    wait_for(lambda: count(counter) == 4, what="the fourth run, with no server")
    server.start()
    with server.client() as c:
        now = wait_for(lambda: (p := c.get("/v1/process/alone").json())["restarts"] == 3 and p, what="3 restarts")
        assert now["status"] == "running"
        assert now["pid"] > 0
        log = wait_log(c, "alone", "run 3")
        assert len(re.findall(r"\[sandbox-agent: restart \d", log)) == 3
        c.post("/v1/process/alone/stop")
        assert wait_exited(c, "alone")["restarts"] == 3


def test_restart_on_request_works_with_or_without_a_policy(c: httpx.Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    plain = c.post("/v1/processes", json=runs(counter, fail=0)).json()
    wait_log(c, plain["id"], "run 0")
    again = c.post(f"/v1/processes/{plain['id']}/restart").json()
    assert (again["status"], again["restarts"]) == ("running", 1)
    assert again["pid"] != plain["pid"]
    log = wait_log(c, plain["id"], "run 1")
    # SIGTERM ended the first run: "signal 15".
    assert "[sandbox-agent: restart 1 on request, after signal 15]" in log
    c.post(f"/v1/processes/{plain['id']}/kill")
    refused = c.post(f"/v1/processes/{plain['id']}/restart")
    assert refused.status_code == 409
    assert "exited" in refused.json()["detail"]
    assert c.post("/v1/process/nosuch/restart").status_code == 404
    c.delete(f"/v1/processes/{plain['id']}")


def test_readiness_is_watched_again_from_each_run(c: httpx.Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    # Run 0 crashes before it is ready, run 1 is ready, later runs never are.
    then = "print('ready' if n == 1 else 'not yet', flush=True)\nimport signal\nsignal.pause()"
    body = {
        **runs(counter, fail=1, then=then),
        "name": "ready-again",
        "restart": {"policy": "on-failure", "backoffMs": 10},
        "waitFor": {"logPattern": "^ready$", "timeoutMs": 20000},
    }
    started = c.post("/v1/process", json=body)
    assert started.status_code == 201, started.text
    assert (started.json()["ready"], started.json()["restarts"]) == (True, 1)
    again = c.post("/v1/process/ready-again/restart").json()
    assert (again["ready"], again["restarts"]) == (False, 2)
    wait_log(c, "ready-again", "run 2\n")
    wait_log(c, "ready-again", "not yet")
    # The "ready" of run 1 is before this run's start: it does not count.
    assert c.get("/v1/process/ready-again/wait", params={"until": "ready", "timeoutMs": 0}).json()["ready"] is False
    c.post("/v1/process/ready-again/kill")
    wait_exited(c, "ready-again")


def test_descendants_of_a_crashed_run_end_before_the_next(c: httpx.Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    pids = tmp_path / "pids"
    # Each run leaves a child behind that would hold on forever; run 0 crashes.
    then = "import signal\nsignal.pause()"
    child = (
        "import subprocess, sys\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
        f"open({str(pids)!r}, 'a').write(str(c.pid) + '\\n')\n"
    )
    code = runs(counter, fail=1, then=then)
    code["args"][-1] = child + code["args"][-1]
    process = c.post("/v1/processes", json={**code, "restart": {"policy": "on-failure", "backoffMs": 10}}).json()
    wait_log(c, process["id"], "run 1")
    first = int(pids.read_text().split()[0])
    wait_for(lambda: not os.path.exists(f"/proc/{first}") or _zombie(first), what="the first run's child to end")
    c.post(f"/v1/processes/{process['id']}/kill")
    wait_exited(c, process["id"])
    c.delete(f"/v1/processes/{process['id']}")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_kill_hup_of_the_supervisor_restarts_too(c: httpx.Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    process = c.post("/v1/processes", json=runs(counter, fail=0)).json()
    wait_log(c, process["id"], "run 0")
    supervisor = int(Path(f"/proc/{process['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(supervisor, signal.SIGHUP)
    wait_log(c, process["id"], "run 1")
    assert c.get(f"/v1/processes/{process['id']}").json()["restarts"] == 1
    c.post(f"/v1/processes/{process['id']}/kill")
    c.delete(f"/v1/processes/{process['id']}")

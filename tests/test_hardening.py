"""Hostile or broken input and broken state: a clear 4xx or a skipped record, never a 5xx."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import Server, py, start, supervisor_of, wait_exited, wait_for
from sandbox_agent.supervisor.launcher import SPARES, RunGuard
from sandbox_agent.supervisor.ondisk import (
    KILL_SIGNAL_REQUEST,
    STOP_SIGNAL_REQUEST,
    boot_clock_ns,
    process_start_ticks,
    spawn_in_session,
    spawned_start_ticks,
)


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


def test_commands_get_no_descriptor_of_ours(server: Server) -> None:
    """A started process and a run see their stdin, stdout and stderr only: no socket,
    pipe or log of the server, the launcher or the supervisor leaks into them."""
    code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    expected = "[0, 1, 2, 3]\n"  # 3: the directory listdir reads
    with server.client() as client:
        process = start(client, py(code))
        wait_exited(client, process["id"])
        assert (
            client.get(f"/v1/process/{process['id']}/logs", params={"stream": "stdout"})
            .json()["content"]
            .endswith(expected)
        )
        run = client.post("/v1/processes/run", json=py(code)).json()
        assert run["stdout"] == expected


def _exits_socket_of(server: Server) -> int:
    """A descriptor of the supervisors' end of the server's exits socket, taken from the
    launcher (``pidfd_getfd``: what a process that got hold of it could do)."""
    wait_for(lambda: server.spare_pids(), 10, "a spare supervisor")
    spare = next(iter(server.spare_pids()))
    stat = Path(f"/proc/{spare}/stat").read_text()
    launcher = int(stat[stat.rindex(")") + 2 :].split()[1])
    exits_fd = int(Path(f"/proc/{launcher}/cmdline").read_bytes().split(b"\0")[6])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(launcher)
    try:
        fd: int = libc.syscall(_SYS_PIDFD_GETFD, pidfd, exits_fd, 0)
    finally:
        os.close(pidfd)
    if fd < 0:
        pytest.skip(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
    return fd


#: pidfd_getfd(2), the same number on every architecture.
_SYS_PIDFD_GETFD = 438


def test_an_exit_told_by_anyone_but_the_supervisor_is_ignored(server: Server) -> None:
    """Supervisors tell the server their command's exit on a datagram socket: a message
    on it from another process (one that got the socket) changes no record."""
    with server.client() as client:
        target = start(client, {"command": "sleep", "args": ["600"]})
        fd = _exits_socket_of(server)
        try:
            forged = {**client.get(f"/v1/process/{target['id']}").json(), "status": "stopped", "exitCode": 0}
            forged.update(stoppedAt=time.time(), exitSignal=None)
            os.write(fd, json.dumps(forged).encode())
        finally:
            os.close(fd)
        # Told after the forgery, on the same socket, so read after it.
        later = start(client, {"command": "true"})
        assert wait_exited(client, later["id"])["exitCode"] == 0
        assert client.get(f"/v1/process/{target['id']}").json()["status"] == "running"
        assert client.post(f"/v1/process/{target['id']}/kill").status_code == 204
        assert wait_exited(client, target["id"])["exitSignal"] == signal.SIGKILL


def test_a_request_signal_to_a_spare_does_not_reach_the_next_command(server: Server) -> None:
    """The spare supervisor takes stop and kill requests before it has a command (so that
    none is lost once it has one); one sent to it before, which can only be meant for some
    earlier process with its pid, must not stop the command it then starts."""
    # The launcher forks the spares after the server answers; each takes its name once ready.
    wait_for(lambda: len(server.spare_pids()) == SPARES, 10, "the spare supervisors")
    for spare in server.spare_pids():
        os.kill(spare, STOP_SIGNAL_REQUEST)
        os.kill(spare, KILL_SIGNAL_REQUEST)
    with server.client() as client:
        process = start(client, py("import time\nprint('up', flush=True)\ntime.sleep(600)"))
        wait_for(lambda: "up" in client.get(f"/v1/process/{process['id']}/logs").json()["content"], 10, "up")
        # A stop or kill acted on would end it at once; it is still running half a second on.
        after = client.get(f"/v1/processes/{process['id']}", params={"waitMs": 500}).json()
        assert after["status"] == "running"
        client.post(f"/v1/process/{process['id']}/kill")
        wait_exited(client, process["id"])


def test_last_event_id_must_be_ascii_digits_of_sane_length(server: Server) -> None:
    with server.client() as client:
        process = start(client, py("print('x')"))
        path = f"/v1/process/{process['id']}/logs?follow=true"
        for bad in ("²", "1²", "9" * 5000, "-1", "0x10"):
            headers = {"Last-Event-ID": bad.encode()}
            assert_problem(client.get(path, headers=headers), 400, "Last-Event-ID")
        wait_exited(client, process["id"])


def test_request_bodies_are_bounded(server: Server) -> None:
    with server.client() as client:
        huge = b'{"command": "true", "args": ["' + b"x" * (3 * 1024 * 1024) + b'"]}'
        assert_problem(client.post("/v1/process", content=huge), 413, "MiB")

        def chunks() -> object:
            yield b'{"command": "true", "args": ["'
            for _ in range(40):
                yield b"y" * 100_000
            yield b'"]}'

        # Streamed without a Content-Length: cut off as it comes in.
        assert_problem(client.post("/v1/process", content=chunks()), 413)  # type: ignore[arg-type]
        # Anything under the limit fits the launcher too.
        args = ["z" * 1000] * 1800
        fits = client.post("/v1/process", json={"command": "true", "args": args})
        assert fits.status_code == 201, fits.text
        assert wait_exited(client, fits.json()["id"])["exitCode"] == 0


def test_no_docs_page_from_a_cdn(server: Server) -> None:
    with server.client() as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 200


def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sandbox_agent", "server", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_a_bad_data_dir_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = run_server("--data-dir", "/proc/nope")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "/proc/nope" in result.stderr
    assert "data-dir" in result.stderr


def test_any_origin_without_a_token_is_refused(tmp_path: Path) -> None:
    result = run_server("--data-dir", str(tmp_path), "--cors-allow-origin", "*")
    assert result.returncode == 2
    assert "token" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_token_file_is_one_line(tmp_path: Path) -> None:
    result = run_server("--data-dir", str(tmp_path), "--token-file", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "token file" in result.stderr
    assert "Traceback" not in result.stderr


ENVIRON_OF_PARENTS = """
import os
pid = os.getppid()
while pid > 1:
    with open(f"/proc/{pid}/environ", "rb") as f:
        print(pid, b"SANDBOX_AGENT_TOKEN" in f.read(), flush=True)
    with open(f"/proc/{pid}/stat") as f:
        pid = int(f.read().rsplit(")", 1)[1].split()[1])
"""


@pytest.mark.parametrize("how", ["file", "env"])
def test_the_token_reaches_no_managed_process(server_factory: Callable[..., Server], tmp_path: Path, how: str) -> None:
    secret = "s3cret-kept-from-children"
    if how == "file":
        (tmp_path / "token").write_text(secret + "\n")
        server = server_factory(extra_args=["--token-file", str(tmp_path / "token")])
    else:
        server = server_factory(extra_env={"SANDBOX_AGENT_TOKEN": secret})
    server.token = secret
    with server.client() as client:
        assert client.get("/v1/process", headers={"Authorization": "Bearer wrong"}).status_code == 401
        process = start(client, py(ENVIRON_OF_PARENTS + "print(os.environ.get('SANDBOX_AGENT_TOKEN'))"))
        wait_exited(client, process["id"])
        out = client.get(f"/v1/process/{process['id']}/logs", params={"stream": "stdout", "strip_timestamps": True})
    lines = out.json()["content"].splitlines()
    assert lines[-1] == "None"
    supervisor_and_launcher = lines[:2]
    assert len(supervisor_and_launcher) == 2, lines
    assert all(line.endswith("False") for line in supervisor_and_launcher), lines


BIG_WRITER = r"""
import sys
out = sys.stdout.buffer
for i in range(60000):
    out.write(b"line %06d \xc3\xa9t\xc3\xa9 \xff\xfe " % i + b"x" * 40 + b"\n")
out.flush()
"""


def test_a_large_log_streams_in_pieces_and_reads_the_same(server: Server) -> None:
    with server.client() as client:
        process = start(client, py(BIG_WRITER))
        wait_exited(client, process["id"])
        path = f"/v1/process/{process['id']}/logs"
        raw = Path(process["logPaths"]["stdout"]).read_bytes()
        assert len(raw) > 3 * 1024 * 1024  # several pieces
        expected = "".join(line[27:] + "\n" for line in raw.decode("utf-8", "replace").split("\n")[:-1])

        with client.stream("GET", path, params={"stream": "stdout", "strip_timestamps": "true"}) as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers  # streamed, not built whole
            pieces = response.iter_bytes()
            received = [next(pieces)]
            # The server answers others while this read is open.
            assert client.get("/v1/health").json()["status"] == "ok"
            received.extend(pieces)
            body = json.loads(b"".join(received))
        assert body["lines"] == 60000
        assert body["content"] == expected

        small = client.get(path, params={"stream": "stdout", "tail": 2}).json()
        assert small["lines"] == 2
        assert small["content"].endswith("x" * 40 + "\n")


#: 40 MB of 100-byte lines in 1 MB writes, a marker line, then quiet.
BURST = (
    "import sys, time\n"
    "chunk = (b'x' * 99 + b'\\n') * 10000\n"
    "for _ in range(40): sys.stdout.buffer.write(chunk)\n"
    "sys.stdout.buffer.write(b'burst done\\n'); sys.stdout.flush()\n"
    "time.sleep(60)\n"
)


def _private_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Dirty:", "Private_Clean:")))


def test_a_supervisor_gives_back_the_memory_of_a_burst_of_output(server: Server) -> None:
    # While output pours in, a supervisor's heap keeps the read and log buffers it frees
    # (HEAP_KEPT); once the output stops, it gives them back (TRIM_AFTER), so that a
    # process that was loud once costs what a quiet one does, not the burst's buffers.
    with server.client() as client:
        process = start(client, py(BURST))
        logs = f"/v1/process/{process['id']}/logs"

        def burst_logged() -> bool:
            tail = client.get(logs, params={"stream": "stdout", "tail": 1}).json()
            return bool(tail["content"].endswith("burst done\n"))

        wait_for(burst_logged, 60, "the burst in the log")
        supervisor = supervisor_of(server, process["id"])
        # Kept, the burst's buffers make about 13 MB here; given back, what is left is
        # the interpreter's own pages and the log writer's thread (about 2 MB).
        wait_for(lambda: _private_kb(supervisor) < 6 * 1024, 15, "the supervisor to give its heap back")
        assert client.post(f"/v1/process/{process['id']}/kill").status_code == 204
        wait_exited(client, process["id"])


def test_the_openapi_document_is_true_to_the_wire(server: Server) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
        options = client.request("OPTIONS", "/v1/process")
        assert options.status_code == 405
        assert {m.strip() for m in options.headers["allow"].split(",")} >= {"GET", "POST"}
        assert "GET" in client.request("PUT", f"/v1/process/{'0' * 26}").headers["allow"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if not path.startswith("/v1/processes"):
                assert "422" not in responses, (method, path)  # validation errors are 400s here
            for code, response in responses.items():
                if code[0] in "45":
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, code)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    start = document["paths"]["/v1/process"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert start == {"$ref": "#/components/schemas/StartProcess"}
    assert "SPEC" not in str(document)  # no pointer to a document that is not in the package


@pytest.mark.slow
def test_out_of_descriptors_refuses_starts_and_kills_nothing(server_factory: Callable[..., Server]) -> None:
    server = server_factory(prefix=["prlimit", "--nofile=256:256"])
    started: list[dict[str, object]] = []
    refused = 0
    with server.client() as client:
        try:
            for _ in range(300):
                response = client.post("/v1/process", json={"command": "sleep", "args": ["600"]})
                if response.status_code == 201:
                    started.append(response.json())
                    continue
                assert_problem(response, 503, "file descriptors")
                assert response.headers["retry-after"]
                refused += 1
            assert refused > 0, "the limit was never reached: the test proves nothing"
            assert len(started) > 100
            # Every process we said we started runs, and is shown as running.
            listed = {p["id"]: p for p in client.get("/v1/process").json()["processes"]}
            assert set(listed) == {p["id"] for p in started}
            for process in started:
                assert listed[str(process["id"])]["status"] == "running"
                os.kill(int(process["pid"]), 0)  # alive
            # A follow while short of descriptors works or is a 503 too: never a 500.
            path = f"/v1/process/{started[0]['id']}/logs"
            with client.stream("GET", path, params={"follow": "true", "tail": "0"}) as follow:
                assert follow.status_code in (200, 503)
        finally:
            for process in started:
                client.post(f"/v1/process/{process['id']}/kill")
            for process in started:
                assert wait_exited(client, str(process["id"]), timeout=60)["status"] == "killed"
        # With the processes gone there is room again.
        again = client.post("/v1/process", json={"command": "true"})
        assert again.status_code == 201, again.text
        wait_exited(client, again.json()["id"])


def test_a_large_follow_snapshot_streams_and_reads_the_same(server: Server) -> None:
    with server.client() as client:
        process = start(client, py(BIG_WRITER))
        wait_exited(client, process["id"])
        path = f"/v1/process/{process['id']}/logs"
        params = {"stream": "stdout", "strip_timestamps": "true"}
        whole = client.get(path, params=params).json()
        with client.stream("GET", path, params={**params, "follow": "true"}) as response:
            lines = response.iter_lines()
            first = next(lines)
            assert first.startswith("id: ")
            assert client.get("/v1/health").json()["status"] == "ok"  # answered meanwhile
            data = next(lines)
            rest = list(lines)
        assert data.startswith("data: ")
        assert json.loads(data.removeprefix("data: ")) == whole
        assert "event: exit" in rest


def test_the_launcher_kills_only_runs_that_are_still_the_same_process() -> None:
    """``RunGuard`` reads the server's lines in batches: a run that started and ended in
    between is not killed, and neither is a live process whose start time is not the one
    the server named (a pid reused after the run was reaped)."""

    def group() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sleep", "60"], start_new_session=True)

    named, reused, ended = group(), group(), group()
    try:
        read, write = os.pipe()
        guard = RunGuard(read)
        os.set_blocking(read, False)
        ticks = {p.pid: process_start_ticks(p.pid) for p in (named, reused, ended)}
        lines = (
            f"+{named.pid} {ticks[named.pid]}\n"
            f"+{reused.pid} {ticks[reused.pid] - 1}\n"  # named with another start time
            f"+{ended.pid} {ticks[ended.pid]}\n-{ended.pid}\n"
        )
        os.write(write, lines[:25].encode())  # a line cut between two reads
        assert guard.read()  # nothing more for now: the pipe is open
        os.write(write, lines[25:].encode())
        os.close(write)
        assert not guard.read()  # the server's end is closed
        guard.kill_all()
        assert named.wait(10) == -signal.SIGKILL
        # kill_all signalled before it returned: by the time the named run is reaped, a
        # signal to the others would have ended them too.
        assert reused.poll() is None
        assert ended.poll() is None
    finally:
        for p in (named, reused, ended):
            p.kill()
            p.wait()
        os.close(read)


def test_a_spawned_process_is_named_by_its_own_start_time() -> None:
    """The start time a spawn gives (taken from the boot clock around the spawn, which
    /proc would make the caller wait for) is the one /proc shows, spawn after spawn; a
    spawn whose clock readings straddle a tick reads /proc instead."""
    for _ in range(200):
        pid, ticks = spawn_in_session("/bin/sleep", ["sleep", "30"], dict(os.environ), [])
        try:
            assert ticks is not None
            assert ticks == process_start_ticks(pid)
            # Readings a tick apart: the clock cannot tell, /proc is read.
            assert spawned_start_ticks(pid, boot_clock_ns() - 20_000_000) == ticks
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

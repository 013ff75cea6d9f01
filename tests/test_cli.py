"""``sandbox-agent process ...`` against a real server.

Most commands run in this process through ``main(argv)``, output captured by capsys; the
tests of the real entry point and of Ctrl-C run the command line as a subprocess.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from conftest import Server, free_port, wait_for
from sandbox_agent import Client, NotFound
from sandbox_agent.cli import main

UNKNOWN_ID = "0" * 26
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
COMMANDS = [
    "start",
    "run",
    "attach",
    "input",
    "exec",
    "wait",
    "ls",
    "inspect",
    "logs",
    "stop",
    "kill",
    "restart",
    "rm",
    "prune",
]


@pytest.fixture
def server(checked_shared_server: Server) -> Server:
    """One server per module (restart and token tests make their own)."""
    return checked_shared_server


@pytest.fixture
def sdk(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=10) as client:
        yield client


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``sandbox-agent --url <server> ARGS...``: (exit status, stdout, stderr)."""
    monkeypatch.delenv("SANDBOX_AGENT_TOKEN", raising=False)

    def run(*args: str, url: str | None = server.url) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main([*(["--url", url] if url else []), *args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def python(code: str) -> list[str]:
    return ["--", sys.executable, "-u", "-c", code]


def one_error_line(err: str) -> str:
    assert err.startswith("sandbox-agent: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def read_until(stream: IO[bytes], needle: bytes, timeout: float = 15.0) -> bytes:
    """Read a subprocess's pipe until ``needle`` shows; fail after ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {data!r}"
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"end of output before {needle!r}; got {data!r}"
            data += chunk
    return data


def cli_subprocess(
    server: Server, *args: str, stdin: int | IO[bytes] = subprocess.DEVNULL, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sandbox_agent", "--url", server.url, *args]
    return subprocess.Popen(
        command,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        # As in a user's terminal, whatever this run inherited (nohup ignores SIGHUP, and
        # the CLI leaves an ignored signal alone, on purpose).
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


# -- help and usage -----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_with_an_example(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["process", *command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "sandbox-agent process" in out


def test_usage_errors(cli: Cli) -> None:
    assert cli("process")[0] == 2  # prints the help of the group
    for args in (["process", "start"], ["process", "start", "--env", "NOEQUALS", "--", "true"], ["process", "logs"]):
        with pytest.raises(SystemExit) as exited:
            cli(*args)
        assert exited.value.code == 2


# -- every command --------------------------------------------------------------------


def test_start_prints_the_id(cli: Cli, sdk: Client, tmp_path: Path) -> None:
    code = "import os; print(os.getcwd(), os.environ['A'], os.environ['B'])"
    status, out, err = cli("process", "start", "--cwd", str(tmp_path), "--env", "A=1", "--env", "B=x=y", *python(code))
    assert (status, err) == (0, "")
    process_id = out.strip()
    assert sdk.wait(process_id, timeout=10).exit_code == 0
    assert sdk.logs(process_id, stream="stdout", strip_timestamps=True).content == f"{tmp_path} 1 x=y\n"


def test_restart_option_and_command(cli: Cli, sdk: Client, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    code = (
        f"import os, signal, sys\np = {str(counter)!r}\nn = int(open(p).read()) if os.path.exists(p) else 0\n"
        "open(p, 'w').write(str(n + 1))\nprint('run', n)\nsys.exit(2) if n == 0 else signal.pause()"
    )
    status, out, err = cli(
        "process", "start", "--name", "cli-restart", "--restart", "on-failure:3", "--restart-backoff", "10",
        *python(code),
    )  # fmt: skip
    assert (status, err) == (0, "")
    process_id = out.strip()
    wait_for(lambda: sdk.get(process_id).restarts == 1 and "run 1" in sdk.logs(process_id).content, what="run 1")
    process = sdk.get(process_id)
    assert process.restart is not None
    assert (process.restart.policy, process.restart.max_restarts, process.restart.backoff_ms) == ("on-failure", 3, 10)
    status, out, err = cli("process", "restart", "cli-restart")
    assert (status, out, err) == (0, "cli-restart\n", "")
    assert sdk.get(process_id).restarts == 2
    assert "restart 2 on request" in sdk.logs(process_id).content
    assert cli("process", "kill", "cli-restart")[0] == 0
    status, out, err = cli("process", "restart", "cli-restart")
    assert status == 1
    assert "exited" in one_error_line(err)
    with pytest.raises(SystemExit) as usage:
        cli("process", "start", "--restart", "sometimes", *python("pass"))
    assert usage.value.code == 2


def test_start_without_double_dash(cli: Cli, sdk: Client) -> None:
    status, out, _ = cli("process", "start", sys.executable, "-c", "pass")
    assert status == 0
    assert sdk.wait(out.strip(), timeout=10).args == ["-c", "pass"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import sys; print('to out'); print('to err', file=sys.stderr)", 0),
        ("import sys; print('failing'); sys.exit(3)", 3),
        ("import os, signal; print('dying'); os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
    ],
)
def test_run_streams_and_exits_with_the_status(cli: Cli, code: str, expected: int) -> None:
    status, out, err = cli("process", "run", *python(code))
    assert status == expected
    if expected == 0:
        assert (out, err) == ("to out\n", "to err\n")
    else:
        assert err == ""
        assert out in ("failing\n", "dying\n")


def test_run_with_cwd_env_and_rm(cli: Cli, sdk: Client, tmp_path: Path) -> None:
    before = {p.id for p in sdk.list()}
    code = "import os; print(os.getcwd(), os.environ['GREETING'])"
    status, out, _ = cli("process", "run", "--rm", "--cwd", str(tmp_path), "--env", "GREETING=hi", *python(code))
    assert (status, out) == (0, f"{tmp_path} hi\n")
    assert {p.id for p in sdk.list()} == before


def test_ls(cli: Cli, sdk: Client) -> None:
    done = sdk.start(sys.executable, ["-c", "raise SystemExit(2)"])
    sdk.wait(done.id, timeout=10)
    running = sdk.start(sys.executable, ["-u", "-c", SLEEPER])

    status, out, _ = cli("process", "ls")
    assert status == 0
    header, *rows = out.splitlines()
    # NAME and PORTS show when some process (here: one an earlier test left on this shared
    # server) has a name or ports.
    assert [c for c in header.split() if c not in ("NAME", "PORTS")] == ["ID", "STATUS", "PID", "STARTED", "COMMAND"]
    by_id = {row.split()[0]: row for row in rows}
    assert "stopped (exit 2)" in by_id[done.id]
    assert "running" in by_id[running.id]
    assert str(sdk.get(running.id).pid) in by_id[running.id]
    assert f"{sys.executable} -u -c" in by_id[running.id]
    assert rows.index(by_id[running.id]) < rows.index(by_id[done.id])  # newest first

    status, out, _ = cli("process", "ls", "--json")
    listed = {p["id"]: p for p in json.loads(out)}
    assert listed[done.id]["exitCode"] == 2
    assert listed[running.id]["status"] == "running"

    status, out, _ = cli("process", "ls", "--quiet")
    assert out.split().index(running.id) < out.split().index(done.id)

    assert cli("process", "kill", running.id)[:2] == (0, f"{running.id}\n")
    _, out, _ = cli("process", "ls")
    assert "killed (SIGKILL)" in out


def test_inspect(cli: Cli, sdk: Client) -> None:
    process = sdk.start(sys.executable, ["-c", "raise SystemExit(4)"])
    sdk.wait(process.id, timeout=10)
    status, out, _ = cli("process", "inspect", process.id)
    assert status == 0
    data = json.loads(out)
    assert data == sdk.get(process.id).to_wire()
    assert (data["id"], data["exitCode"], data["status"]) == (process.id, 4, "stopped")
    assert "logPaths" in data


def test_logs(cli: Cli, sdk: Client) -> None:
    code = "import sys; print('a'); print('b', file=sys.stderr); print('c')"
    process = sdk.start(sys.executable, ["-u", "-c", code])
    sdk.wait(process.id, timeout=10)
    pid = process.id

    # The order of stdout lines against stderr lines is whatever the supervisor read first.
    status, out, _ = cli("process", "logs", pid)
    assert status == 0
    assert out.startswith("[20")
    assert sorted(line.split("] ", 1)[1] for line in out.splitlines()) == ["[stderr] b", "[stdout] a", "[stdout] c"]
    stripped = cli("process", "logs", "--no-timestamps", pid)[1]
    assert sorted(stripped.splitlines()) == ["[stderr] b", "[stdout] a", "[stdout] c"]
    assert cli("process", "logs", "--no-timestamps", "--stream", "stdout", pid)[1] == "a\nc\n"
    assert cli("process", "logs", "--no-timestamps", "--stream", "stdout", "--tail", "1", pid)[1] == "c\n"
    assert cli("process", "logs", "--no-timestamps", "--stream", "stderr", pid)[1] == "b\n"
    assert cli("process", "logs", "-f", "--no-timestamps", "--stream", "stdout", "--tail", "1", pid)[1] == "c\n"


def test_logs_follow_ends_when_the_process_exits(cli: Cli, sdk: Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    code = f"import os, time\nprint('first')\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('last')"
    process = sdk.start(sys.executable, ["-u", "-c", code])
    lines = sdk.follow(process.id)
    next(lines)  # 'first' is logged
    gate.touch()
    status, out, _ = cli("process", "logs", "--follow", "--no-timestamps", "--stream", "stdout", process.id)
    assert (status, out) == (0, "first\nlast\n")
    assert list(lines)[-1].endswith("last")


def test_stop_kill_rm(cli: Cli, sdk: Client) -> None:
    first = sdk.start(sys.executable, ["-u", "-c", SLEEPER])
    second = sdk.start(sys.executable, ["-u", "-c", SLEEPER])

    status, _, err = cli("process", "rm", first.id)
    assert status == 1
    assert "stop or kill" in one_error_line(err)

    assert cli("process", "stop", first.id) == (0, f"{first.id}\n", "")
    assert sdk.get(first.id).exited  # stop waits for the exit
    assert sdk.get(first.id).status == "stopped"
    assert cli("process", "kill", second.id) == (0, f"{second.id}\n", "")
    assert sdk.get(second.id).status == "killed"
    assert cli("process", "rm", first.id, second.id) == (0, f"{first.id}\n{second.id}\n", "")
    for process in (first, second):
        with pytest.raises(NotFound):
            sdk.get(process.id)

    third = sdk.start(sys.executable, ["-u", "-c", SLEEPER])
    assert cli("process", "rm", "--force", third.id) == (0, f"{third.id}\n", "")
    with pytest.raises(NotFound):
        sdk.get(third.id)


# -- errors: one line, no traceback ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["inspect", UNKNOWN_ID], ["logs", UNKNOWN_ID], ["logs", "-f", UNKNOWN_ID], ["stop", UNKNOWN_ID], ["rm", "nope"]],
)
def test_unknown_id(cli: Cli, args: list[str]) -> None:
    status, out, err = cli("process", *args)
    assert (status, out) == (1, "")
    assert UNKNOWN_ID in one_error_line(err) or "nope" in err


def test_unreachable_server(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["ls"], ["run", "--", "true"], ["logs", "-f", UNKNOWN_ID]):
        status, out, err = cli("process", *args, url=url)
        assert (status, out) == (1, "")
        assert f"cannot reach the sandbox-agent server at {url}" in one_error_line(err)


def test_token(server_factory: Callable[..., Server], cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_factory(token="s3cret")
    status, _, err = cli("process", "ls", url=server.url)
    assert status == 1
    assert "needs a token" in one_error_line(err)
    status, _, err = cli("--token", "wrong", "process", "ls", url=server.url)
    assert status == 1
    assert "rejected the token" in one_error_line(err)
    assert cli("--token", "s3cret", "process", "ls", url=server.url)[0] == 0
    monkeypatch.setenv("SANDBOX_AGENT_TOKEN", "s3cret")
    monkeypatch.setenv("SANDBOX_AGENT_URL", server.url)
    assert cli("process", "run", *python("print('hi')"), url=None) == (0, "hi\n", "")


# -- the real entry point, Ctrl-C ----------------------------------------------------------


def test_entry_point_run(server: Server) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    proc = cli_subprocess(server, "process", "run", *python(code))
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (3, b"out\n", b"err\n")


def test_entry_point_error_has_no_traceback(server: Server) -> None:
    proc = cli_subprocess(server, "process", "inspect", UNKNOWN_ID)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (1, b"")
    one_error_line(err.decode())


def test_ctrl_c_on_run_stops_the_process(server: Server, sdk: Client) -> None:
    code = """
import signal, sys, time
def bye(signum, frame):
    print('got SIGTERM', flush=True)
    sys.exit(5)
signal.signal(signal.SIGTERM, bye)
print('ready', flush=True)
time.sleep(60)
"""
    proc = cli_subprocess(server, "process", "run", *python(code))
    assert proc.stdout is not None
    assert proc.stderr is not None
    out = read_until(proc.stdout, b"ready\n")
    proc.send_signal(signal.SIGINT)
    err = read_until(proc.stderr, b"(Ctrl-C again to kill it)\n")
    rest, more = proc.communicate(timeout=30)
    assert out + rest == b"ready\ngot SIGTERM\n"
    assert proc.returncode == 5  # the process's own exit status, after its SIGTERM handler
    process_id = (err + more).decode().split("stopping process ")[1].split()[0]
    final = sdk.get(process_id)
    assert (final.status, final.exit_code) == ("stopped", 5)


def test_second_ctrl_c_kills(server: Server, sdk: Client) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    proc = cli_subprocess(server, "process", "run", *python(code))
    assert proc.stdout is not None
    assert proc.stderr is not None
    read_until(proc.stdout, b"ready\n")
    proc.send_signal(signal.SIGINT)
    err = read_until(proc.stderr, b"(Ctrl-C again to kill it)\n")
    proc.send_signal(signal.SIGINT)
    _, more = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGKILL
    assert b"killing process" in more
    process_id = err.decode().split("stopping process ")[1].split()[0]
    assert sdk.get(process_id).status == "killed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_on_run_stop_the_process(server: Server, sdk: Client, sig: signal.Signals) -> None:
    # An agent harness that times the command out sends SIGTERM: the process must not outlive it.
    proc = cli_subprocess(server, "process", "run", *python(SLEEPER))
    assert proc.stdout is not None
    assert proc.stderr is not None
    read_until(proc.stdout, b"ready\n")
    proc.send_signal(sig)
    err = read_until(proc.stderr, f"({sig.name} again to kill it)\n".encode())
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM  # the process's own end: SIGTERM
    process_id = err.decode().split("stopping process ")[1].split()[0]
    assert sdk.get(process_id).exit_signal == signal.SIGTERM


# -- stdin, exec, input, wait ---------------------------------------------------------------


def test_run_forwards_piped_stdin(server: Server) -> None:
    proc = cli_subprocess(server, "process", "run", "--", "cat", stdin=subprocess.PIPE)
    out, err = proc.communicate(b"hi\nthere\n", timeout=30)
    assert (proc.returncode, out, err) == (0, b"hi\nthere\n", b"")


def test_run_forwards_a_file_as_stdin(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"x" * 200_000 + b"\nend\n")  # more than one input request holds
    with source.open("rb") as stdin:
        proc = cli_subprocess(
            server, "process", "run", *python("import sys; print(len(sys.stdin.read()))"), stdin=stdin
        )
        out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, b"200005\n")


def test_run_without_piped_stdin_gives_an_empty_one(server: Server) -> None:
    proc = cli_subprocess(server, "process", "run", *python("import sys; print(repr(sys.stdin.read()))"))
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, b"''\n")


def test_start_and_run_use_the_callers_directory_on_a_local_server(server: Server, tmp_path: Path) -> None:
    proc = cli_subprocess(server, "process", "run", *python("import os; print(os.getcwd())"), cwd=tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out.decode()) == (0, f"{tmp_path}\n")


def test_is_local() -> None:
    from sandbox_agent.cli._process import is_local

    assert is_local("http://127.0.0.1:2468")
    assert is_local("localhost:8080")
    assert is_local("http://[::1]:2468")
    assert not is_local("http://10.0.0.5:2468")
    assert not is_local("https://sandbox.example.com")


def test_exec(cli: Cli, tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd()); print('oops', file=sys.stderr); sys.exit(3)"
    assert cli("process", "exec", "--cwd", str(tmp_path), *python(code)) == (3, f"{tmp_path}\n", "oops\n")

    status, out, err = cli("process", "exec", "--timeout", "0.3", *python("import time; time.sleep(30)"))
    assert (status, out) == (124, "")
    assert "timed out" in one_error_line(err)

    status, out, err = cli("process", "exec", "--max-output", "5", *python("print('0123456789')"))
    assert (status, out) == (0, "01234")
    assert "stdout was cut" in one_error_line(err)

    status, _, err = cli("process", "exec", "--", "no-such-tool")
    assert status == 1
    assert "no-such-tool" in one_error_line(err)


def test_input_wait_and_logs_follow_exit_with_the_code(cli: Cli) -> None:
    code = (
        "import sys; line = sys.stdin.readline(); rest = sys.stdin.read(); print(line.strip(), len(rest)); sys.exit(7)"
    )
    status, out, _ = cli("process", "start", "-i", *python(code))
    assert status == 0
    process_id = out.strip()
    assert cli("process", "input", process_id, "hello\n") == (0, "", "")
    assert cli("process", "input", "--eof", process_id, "abc") == (0, "", "")
    assert cli("process", "wait", "--timeout", "30", process_id) == (7, "", "")
    assert cli("process", "logs", "-f", "--no-timestamps", process_id) == (7, "[stdout] hello 3\n", "")
    status, _, err = cli("process", "input", process_id, "late")
    assert status == 1
    assert "sandbox-agent: " in one_error_line(err)
    with pytest.raises(SystemExit):
        cli("process", "input", process_id)  # neither DATA nor --eof


def test_wait_timeout(cli: Cli, sdk: Client) -> None:
    process = sdk.start(sys.executable, ["-c", SLEEPER])
    status, _, err = cli("process", "wait", "--timeout", "0.1", process.id)
    assert status == 124
    assert "still running" in one_error_line(err)
    sdk.kill(process.id)
    sdk.wait(process.id, timeout=10)


def test_progress_bars_show_their_last_frame(cli: Cli, sdk: Client) -> None:
    code = "import sys; sys.stdout.write('10%\\r50%\\r100%\\ndone\\r\\n'); sys.stdout.flush()"
    assert cli("process", "run", *python(code)) == (0, "100%\ndone\n", "")
    process_id = sdk.list()[0].id
    assert cli("process", "logs", "--no-timestamps", process_id)[1] == "[stdout] 100%\n[stdout] done\n"
    assert cli("process", "logs", "-f", "--no-timestamps", process_id)[1] == "[stdout] 100%\n[stdout] done\n"
    _, out, _ = cli("process", "logs", "-f", "--stream", "stdout", process_id)
    assert [line.split("] ", 1)[1] for line in out.splitlines()] == ["100%", "done"]


def test_last_frame() -> None:
    from sandbox_agent.cli._run import last_frame

    assert last_frame("plain") == "plain"
    assert last_frame("[stdout] 1\r2\r3") == "[stdout] 3"
    assert last_frame("[2026-01-30T12:32:45.123Z] [stderr] a\nb") == "[2026-01-30T12:32:45.123Z] [stderr] b"
    assert last_frame("[2026-01-30T12:32:45.123Z] x\ry") == "[2026-01-30T12:32:45.123Z] y"
    assert last_frame("abc\r") == "abc"
    assert last_frame("\r\r") == ""

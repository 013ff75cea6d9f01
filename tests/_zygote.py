"""Test servers forked from one warm interpreter, so that a test does not wait for the
server's imports (about half a second each, a quarter of the whole suite's time).

Run as ``python _zygote.py FD``: it imports what ``sandbox-agent server`` imports, then
serves requests on the socket ``FD``, one JSON line each:

- ``{"op": "spawn", "argv": [...], "env": {...}, "cwd": ..., "log": ...}``: fork; the
  child takes that environment (exactly: what the launcher and every process it starts
  inherit), directory, and log as its stdout and stderr, and runs the CLI's ``main`` on
  ``argv``, as ``python -m sandbox_agent`` would after its imports. Answers ``{"pid": N}``.
- ``{"op": "reap", "pid": N}``: wait for that child, which has exited; answers
  ``{"code": C}`` as ``Popen.returncode`` has it (``-signal`` for a signal).

What a forked server cannot show is the exec: its ``/proc/<pid>/environ`` and cmdline
are the zygote's. So the conftest execs a real server for any test that sets its
environment or wraps its command, and the tests of its start-up exec it too.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def _serve(fd: int) -> None:
    # As the CLI's server command does before it imports the server.
    sys.modules.setdefault("watchfiles", None)  # type: ignore[arg-type]
    import sandbox_agent.server  # noqa: F401 -- the point: imported once, here
    from sandbox_agent.cli import main

    sock = socket.socket(fileno=fd)
    stream = sock.makefile("rwb", buffering=0)
    for line in stream:
        request = json.loads(line)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                stream.close()
                sock.close()
                _child(main, request)
            answer: dict[str, Any] = {"pid": pid}
        else:
            _pid, status = os.waitpid(request["pid"], 0)
            answer = {"code": os.waitstatus_to_exitcode(status)}
        stream.write(json.dumps(answer).encode() + b"\n")


def _child(main: Any, request: dict[str, Any]) -> None:
    code = 1
    try:
        os.chdir(request["cwd"])
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkedServer:
    """What the tests use of a ``Popen``, for a server the zygote forked."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        #: Readable once the server has exited (a pidfd works for a process not our child).
        self.pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            self._reap()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self.pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"server {self.pid}", timeout or 0)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def _reap(self) -> None:
        self.returncode = self.zygote.call({"op": "reap", "pid": self.pid})["code"]
        os.close(self.pidfd)


class Zygote:
    """The zygote process, started on first use and stopped by ``close``."""

    def __init__(self, env: dict[str, str]) -> None:
        """``env``: its own environment (no test's marker: it outlives every test)."""
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self.sock = ours
        self.stream = ours.makefile("rwb", buffering=0)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.stream.write(json.dumps(request).encode() + b"\n")
        line = self.stream.readline()
        if not line:
            raise RuntimeError(f"the test servers' zygote exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def spawn(self, argv: list[str], env: dict[str, str], log: Path) -> ForkedServer:
        pid = self.call({"op": "spawn", "argv": argv, "env": env, "cwd": os.getcwd(), "log": str(log)})["pid"]
        return ForkedServer(self, pid)

    def close(self) -> None:
        self.stream.close()
        self.sock.close()
        self.proc.wait(10)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))

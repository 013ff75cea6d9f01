"""Fixtures: a real server on a free port with a temporary data dir, and a leak check.

Every server a test starts carries a marker in its environment, which the launcher, the
supervisors and every managed process inherit. After the test, nothing carrying the
marker may be alive but the server itself and its launcher: anything else is a process
the test left behind, and fails it.

Servers are forked from a warm interpreter (``_zygote.py``) unless the test sets their
environment or wraps their command: then, and with SANDBOX_AGENT_TEST_EXEC_SERVERS=1,
they are exec'd as ``python -m sandbox_agent server``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _zygote import ForkedServer, Zygote

MARKER = "SANDBOX_AGENT_TEST_MARKER"
#: The original server and its TypeScript SDK, from npm (test_reference_diff.py, test_ts_sdk.py).
REFERENCE_DIR = Path(__file__).parent / "reference"
REFERENCE_BIN = REFERENCE_DIR / "node_modules" / "@sandbox-agent" / "cli-linux-x64" / "bin" / "sandbox-agent"


#: Set to exec every test server (``python -m sandbox_agent server``) instead of forking
#: the plain ones from the zygote (``_zygote.py``).
EXEC_SERVERS = os.environ.get("SANDBOX_AGENT_TEST_EXEC_SERVERS") == "1"
_zygote: Zygote | None = None


@pytest.fixture(scope="session", autouse=True)
def _stop_the_zygote() -> Iterator[None]:
    yield
    if _zygote is not None:
        _zygote.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def marked_pids(marker: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment holds ``marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found[int(entry)] = cmdline
    return found


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Server:
    """A ``sandbox-agent server`` subprocess, restartable on the same data dir and port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str | None = None,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        #: Put before the command (``prlimit --nofile=256``, say).
        self.prefix = prefix or []
        self.token = token
        self.extra_args = extra_args or []
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.marker = uuid.uuid4().hex
        self.proc: subprocess.Popen[bytes] | ForkedServer | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30, **kwargs)

    def start(self) -> Server:
        args = [
            sys.executable,
            "-m",
            "sandbox_agent",
            "server",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.token:
            args += ["--token", self.token]
        env = dict(os.environ, **{MARKER: self.marker})
        env.pop("SANDBOX_AGENT_TOKEN", None)
        env.update(self.extra_env)
        if self.prefix or self.extra_env or EXEC_SERVERS:
            # Exec'd: what the test looks at may be the process's own environment.
            with open(self.log_path, "ab") as log:
                command = self.prefix + args + self.extra_args
                self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        else:
            global _zygote
            if _zygote is None:
                _zygote = Zygote({k: v for k, v in os.environ.items() if k not in (MARKER, "SANDBOX_AGENT_TOKEN")})
            self.proc = _zygote.spawn(args[3:] + self.extra_args, env, self.log_path)
        wait_for(self._healthy, 20, f"the server on port {self.port} (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited with {self.proc.returncode}: {self.log_path.read_text()}")
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server with ``sig`` (SIGKILL: a crash); return its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(20)
        self.proc = None
        return code

    def crash(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> Server:
        self.stop(sig)
        return self.start()

    def own_pids(self) -> set[int]:
        """The server, its launcher and the launcher's spare supervisors (named sa-spare):
        the only marked processes allowed to stay."""
        if self.proc is None:
            return set()
        return {self.proc.pid, *_children(self.proc.pid), *self.spare_pids()}

    def spare_pids(self) -> set[int]:
        """The launcher's spare supervisors: its children that named themselves sa-spare
        (which they do once ready to take a request)."""
        if self.proc is None:
            return set()
        spares = set()
        for launcher in _children(self.proc.pid):
            for pid in _children(launcher):
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() == "sa-spare":
                            spares.add(pid)
                except OSError:
                    pass  # gone between the listing and the read
        return spares

    def leftovers(self) -> dict[int, str]:
        own = self.own_pids()
        return {pid: cmd for pid, cmd in marked_pids(self.marker).items() if pid not in own}

    def assert_no_leftovers(self, timeout: float = 10.0) -> None:
        """Wait for every managed process and supervisor to be gone; fail if one stays."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.leftovers()
            if not left:
                return
            if time.monotonic() > deadline:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                raise AssertionError(f"processes left running after the test: {left}")
            time.sleep(0.02)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers with their own data dir; all are stopped and leak-checked after."""
    servers: list[Server] = []

    def make(
        *,
        token: str | None = None,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        data_dir: Path | None = None,
    ) -> Server:
        server = Server(
            data_dir or tmp_path / f"data{len(servers)}",
            token=token,
            extra_args=extra_args,
            extra_env=extra_env,
            prefix=prefix,
        )
        servers.append(server)
        return server.start()

    yield make
    errors = []
    for server in servers:
        try:
            server.assert_no_leftovers()
        except AssertionError as exc:
            errors.append(str(exc))
        finally:
            if server.proc is not None:
                server.stop()
    if errors:
        pytest.fail("; ".join(errors))


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a whole module, for tests that neither restart it nor need a token.

    Use it through ``checked_shared_server``, which leak-checks after every test.
    """
    server = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def checked_shared_server(shared_server: Server) -> Iterator[Server]:
    yield shared_server
    shared_server.assert_no_leftovers()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def py(code: str) -> dict[str, Any]:
    """A start request running ``code`` in a fresh, unbuffered Python."""
    return {"command": sys.executable, "args": ["-u", "-c", code]}


def start(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/process", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def supervisor_of(server: Server, process_id: str) -> int:
    """The pid of the supervisor of ``process_id``, from its state record."""
    state = json.loads((server.data_dir / "processes" / process_id / "state.json").read_text())
    return int(state["supervisorPid"])


def wait_exited(client: httpx.Client, process_id: str, timeout: float = 15.0) -> dict[str, Any]:
    def exited() -> dict[str, Any] | None:
        process: dict[str, Any] = client.get(f"/v1/process/{process_id}").json()
        return process if process["status"] in ("stopped", "killed") else None

    result: dict[str, Any] = wait_for(exited, timeout, f"process {process_id} to exit")
    return result


def wait_log(
    client: httpx.Client, process_id: str, needle: str, stream: str = "combined", timeout: float = 10.0
) -> str:
    def found() -> str | None:
        content: str = client.get(f"/v1/process/{process_id}/logs", params={"stream": stream}).json()["content"]
        return content if needle in content else None

    result: str = wait_for(found, timeout, f"{needle!r} in the {stream} log of {process_id}")
    return result


class SSEEvent:
    def __init__(self, event: str, data: str, id: str | None) -> None:
        self.event = event
        self.data = data
        self.id = id

    def __repr__(self) -> str:
        return f"SSEEvent({self.event!r}, {self.data!r}, id={self.id!r})"


def sse_events(response: httpx.Response) -> Iterator[SSEEvent]:
    """Parse a text/event-stream response into events (comments are skipped)."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    event, data, last_id = "message", [], None
    for line in response.iter_lines():
        if line == "":
            if data:
                yield SSEEvent(event, "\n".join(data), last_id)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                last_id = value


# -- the original server (npm) -----------------------------------------------------


def install_reference() -> None:
    """``npm ci`` in tests/reference unless it is there; fail (never skip) if it cannot be."""
    if REFERENCE_BIN.exists() and (REFERENCE_DIR / "node_modules" / "sandbox-agent").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: install Node.js 18+ with npm, then run `npm ci` in tests/reference")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=REFERENCE_DIR, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0 or not REFERENCE_BIN.exists():
        pytest.fail(
            "could not install the reference server from npm (is the registry reachable?); run `npm ci` in "
            f"{REFERENCE_DIR} by hand to see why.\n{result.stdout}\n{result.stderr}"
        )


@pytest.fixture(scope="session")
def reference_installed() -> Path:
    install_reference()
    REFERENCE_BIN.chmod(0o755)  # npm may skip the package's own chmod (install scripts)
    return REFERENCE_DIR


class Reference:
    """The original server on a free port, with a throwaway HOME and XDG dirs."""

    def __init__(self, home: Path, token: str | None = None) -> None:
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HOME=str(home))
        for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
            env[name] = str(home / name.lower())
        log = open(home / "reference.log", "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        # In a session of its own: the processes it starts share its group, and all go (but
        # tty processes, which get sessions of their own: a test ends those itself).
        self.proc = subprocess.Popen(
            [
                str(REFERENCE_BIN),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *(["--token", token] if token else ["--no-token"]),
                "--no-telemetry",
            ],
            env=env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._healthy, 20, "the reference server")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the reference server exited with {self.proc.returncode}")
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            return httpx.get(f"{self.url}/v1/health", headers=headers, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        # Its tty processes have sessions of their own: the killpg below misses them.
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with httpx.Client(base_url=self.url, headers=headers, timeout=5) as client:
                for process in client.get("/v1/processes").json()["processes"]:
                    if process["status"] == "running":
                        client.post(f"/v1/processes/{process['id']}/kill", params={"waitMs": "2000"})
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._log.close()

"""``process attach``, ``start -it`` and ``run -it`` in a real terminal: tmux.

A private tmux server (``tmux -L``) runs a plain ``sh``; the test types the CLI commands
into it as a person would, resizes the window, detaches and reattaches. Waits are on the
screen's content with a deadline: the pane's output is piped to a FIFO, and the test
blocks on it between looks at the screen, so it never sleeps.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Server
from sandbox_agent import Client
from sandbox_agent.cli._attach import DetachKeys, parse_detach_keys

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

CLI = f"{shlex.quote(sys.executable)} -m sandbox_agent"
# The prompt "bash$ ", written so that the command line typed does not show it.
BASH = "--env 'PS1=ba''sh$ ' -- bash --norc --noprofile -i"


class Tmux:
    """One private tmux server with one 80x24 window running ``sh``."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.socket = f"sa-test-{uuid.uuid4().hex[:12]}"
        fifo = tmp_path / "pane.fifo"
        os.mkfifo(fifo)
        # Read and write (Linux allows it on a FIFO): never an end of file while tmux's
        # writer is not there yet, so a wait below blocks until the pane writes something.
        self.fifo = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        command = shlex.join(["env", *(f"{name}={value}" for name, value in env.items()), "sh"])
        self.tmux("new-session", "-d", "-x", "80", "-y", "24", "-c", str(tmp_path), command)
        self.tmux("pipe-pane", "-o", f"cat > {shlex.quote(str(fifo))}")

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J")

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)
        self.tmux("send-keys", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def resize(self, cols: int, rows: int) -> None:
        self.tmux("resize-window", "-x", str(cols), "-y", str(rows))

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}; the screen:\n{screen}"
            if select.select([self.fifo], [], [], min(left, 1.0))[0]:
                try:
                    os.read(self.fifo, 65536)
                except BlockingIOError:
                    pass

    def wait_text(self, text: str, timeout: float = 20.0) -> str:
        return self.wait_for(lambda screen: text in screen, repr(text), timeout)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        os.close(self.fifo)


@pytest.fixture
def tmux(checked_shared_server: Server, tmp_path: Path) -> Iterator[Tmux]:
    env = {"PS1": "host$ ", "SANDBOX_AGENT_URL": checked_shared_server.url, "TERM": "xterm-256color"}
    term = Tmux(tmp_path, env)
    try:
        term.wait_text("host$ ")
        yield term
    finally:
        term.close()


@pytest.fixture
def sdk(checked_shared_server: Server) -> Iterator[Client]:
    with Client(checked_shared_server.url, timeout=10) as client:
        yield client


def newest_id(sdk: Client) -> str:
    return sdk.list()[0].id


def test_run_it_type_resize_detach_reattach_exit(tmux: Tmux, sdk: Client, tmp_path: Path) -> None:
    tmux.type(f"{CLI} process run -it {BASH}; echo CLI-EXIT=$?")
    tmux.wait_text("bash$ ")
    process_id = newest_id(sdk)
    tmux.type("stty size; pwd")
    tmux.wait_text("24 80")
    tmux.wait_text(str(tmp_path))  # a server on this machine: the caller's directory

    tmux.resize(100, 30)
    tmux.type("stty size")
    tmux.wait_text("30 100")

    # Ctrl-C reaches the shell's foreground job, not the CLI.
    tmux.type("sleep 100; echo after-sleep-$((2+2))")
    tmux.wait_text("bash$ sleep 100; echo after-sleep")
    tmux.keys("C-c")
    tmux.wait_for(lambda s: s.rstrip().endswith("^C\nbash$"), "the prompt after ^C")
    assert "after-sleep-4" not in tmux.screen()

    tmux.keys("C-p", "C-q")
    tmux.wait_text("CLI-EXIT=0")
    tmux.wait_text(f"detached from process {process_id}")
    assert sdk.get(process_id).status == "running"

    tmux.type(f"clear; {CLI} process attach {process_id}; echo CLI-EXIT=$?")
    tmux.wait_for(lambda s: "CLI-EXIT" not in s, "the cleared screen")
    tmux.type("echo back-$((1+2))")
    tmux.wait_text("back-3")
    tmux.resize(90, 20)
    tmux.type("stty size")
    tmux.wait_text("20 90")
    tmux.type("exit 6")
    tmux.wait_text("CLI-EXIT=6")
    assert sdk.wait(process_id, timeout=10).exit_code == 6
    sdk.delete(process_id)


def test_start_it_with_other_detach_keys(tmux: Tmux, sdk: Client) -> None:
    tmux.type(f"{CLI} process start -it --detach-keys ctrl-a,d {BASH}; echo CLI-EXIT=$?")
    tmux.wait_text("bash$ ")
    process_id = newest_id(sdk)
    # A key that begins the sequence, then another: both reach the shell.
    tmux.keys("-l", "echo x")
    tmux.keys("C-a", "-l", "y")  # ^A moves to the start of the line: "yecho x"
    tmux.keys("Enter")
    tmux.wait_text("yecho: command not found")
    tmux.keys("C-a", "d")
    tmux.wait_text("CLI-EXIT=0")
    assert sdk.get(process_id).status == "running"
    sdk.kill(process_id)
    sdk.wait(process_id, timeout=10)
    sdk.delete(process_id)


def test_attach_to_a_process_without_a_terminal_says_so(tmux: Tmux, sdk: Client) -> None:
    process = sdk.start(sys.executable, ["-c", "import time; time.sleep(60)"])
    tmux.type(f"{CLI} process attach {process.id}; echo CLI-EXIT=$?")
    tmux.wait_text("CLI-EXIT=1")
    assert "tty" in tmux.screen()
    sdk.kill(process.id)
    sdk.wait(process.id, timeout=10)
    sdk.delete(process.id)


# -- the detach keys --------------------------------------------------------------------


def test_parse_detach_keys() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,d") == b"\x01d"
    assert parse_detach_keys("ctrl-@,ctrl-_") == b"\x00\x1f"
    assert parse_detach_keys("") == b""
    for bad in ("ctrl-1", "alt-x", "ab", "ctrl-"):
        with pytest.raises(ValueError, match="key"):
            parse_detach_keys(bad)


def test_detach_key_matching() -> None:
    keys = DetachKeys(b"\x10\x11")
    assert keys.feed(b"abc") == (b"abc", False)
    assert keys.feed(b"x\x10") == (b"x", False)  # held: it may start the sequence
    assert keys.feed(b"y") == (b"\x10y", False)  # it did not: sent late, in order
    assert keys.feed(b"\x10\x10") == (b"\x10", False)
    assert keys.feed(b"\x11rest") == (b"", True)
    assert DetachKeys(b"").feed(b"\x10\x11") == (b"\x10\x11", False)
    assert DetachKeys(b"q").feed(b"abqz") == (b"ab", True)


def cli_pid(tmux: Tmux) -> int:
    """The pid of the CLI the pane's shell runs (its only child)."""
    shell = int(tmux.tmux("display-message", "-p", "#{pane_pid}").strip())
    children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.parametrize(("command", "after", "status"), [("start -it", "running", 0), ("run -it", "exited", 143)])
def test_sigterm_to_an_attached_cli(tmux: Tmux, sdk: Client, command: str, after: str, status: int) -> None:
    # start -it / attach: the signal detaches (a closed terminal); run -it: it stops the process.
    tmux.type(f"{CLI} process {command} -- sh -c 'echo ready-$((1+1)); exec sleep 60'; echo CLI-EXIT=$?")
    tmux.wait_text("ready-2")
    process_id = newest_id(sdk)
    os.kill(cli_pid(tmux), signal.SIGTERM)
    screen = tmux.wait_text(f"CLI-EXIT={status}")
    assert sdk.processes.get(process_id).status == after, screen
    if after == "running":
        sdk.kill(process_id)
    sdk.wait(process_id, timeout=10)
    sdk.delete(process_id)

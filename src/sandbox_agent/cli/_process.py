"""``sandbox-agent process ...``: the command line client of the API.

Every command talks to a server through ``Client``; none reads the data dir, so the same
commands drive a remote sandbox. Failures the user can do something about (no server, a
bad token, an unknown id) end in one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from .._exceptions import BadRequest, Conflict, ConnectionFailed, NotFound, SandboxAgentError, Unauthorized
from .._types import STREAMS
from ..models import Process

__all__ = ["add_parser", "main"]

if TYPE_CHECKING:
    # Imported when a command runs: `sandbox-agent server` builds this parser too, and
    # has no use for httpx.
    from ..client import Client

Handler = Callable[["Client", argparse.Namespace], int]

_RAW = argparse.RawDescriptionHelpFormatter
_COMMAND_WIDTH = 60

PROCESS_EXAMPLES = """\
examples:
  sandbox-agent process run -- python -c 'print("hello")'
  id=$(sandbox-agent process start --cwd /srv -- python -m http.server 8000)
  sandbox-agent process logs -f --tail 20 "$id"
  sandbox-agent process stop "$id" && sandbox-agent process rm "$id"
  sandbox-agent --url http://10.0.0.5:2468 --token "$TOKEN" process ls
"""

_EXAMPLES = {
    "start": """\
examples:
  sandbox-agent process start -- python -m http.server 8000
  sandbox-agent process start --cwd /app --env PORT=3000 --env DEBUG=1 -- npm run dev
""",
    "run": """\
examples:
  sandbox-agent process run -- pytest -x tests
  sandbox-agent process run --rm --env CI=1 -- sh -c 'make && make check'; echo "exit status $?"
""",
    "ls": """\
examples:
  sandbox-agent process ls
  sandbox-agent process ls --json | jq -r '.[] | select(.status == "running") | .id'
""",
    "inspect": """\
example:
  sandbox-agent process inspect 01m8fgr3pqe44j6c4rtxkx2gae | jq .exitCode
""",
    "logs": """\
examples:
  sandbox-agent process logs 01m8fgr3pqe44j6c4rtxkx2gae
  sandbox-agent process logs -f --tail 50 --stream stderr --no-timestamps 01m8fgr3pqe44j6c4rtxkx2gae
""",
    "stop": """\
example:
  sandbox-agent process stop 01m8fgr3pqe44j6c4rtxkx2gae
""",
    "kill": """\
example:
  sandbox-agent process kill 01m8fgr3pqe44j6c4rtxkx2gae
""",
    "rm": """\
examples:
  sandbox-agent process rm 01m8fgr3pqe44j6c4rtxkx2gae
  sandbox-agent process rm --force $(sandbox-agent process ls --quiet)   # everything
""",
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``process`` and its subcommands under ``commands``."""
    group = commands.add_parser(
        "process",
        help="start, list, follow and stop processes on a server",
        description="Drive the processes of a sandbox-agent server (--url, default http://127.0.0.1:2468).",
        epilog=PROCESS_EXAMPLES,
        formatter_class=_RAW,
    )
    group.set_defaults(process_handler=None, process_parser=group)
    sub = group.add_subparsers(dest="process_command", metavar="COMMAND")

    def command(name: str, handler: Handler, help: str, description: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(
            name, help=help, description=textwrap.fill(description, 88), epilog=_EXAMPLES[name], formatter_class=_RAW
        )
        parser.set_defaults(process_handler=handler)
        return parser

    start = command(
        "start",
        _start,
        "start a process in the background, print its id",
        "Start CMD with ARGS in the background and print the id of the new process.",
    )
    _add_spawn_options(start, "start")

    run = command(
        "run",
        _run,
        "start a process and stream its output until it exits",
        "Start CMD, print its stdout on stdout and its stderr on stderr as it runs, and exit "
        "with its exit status (128+N when signal N ended it). Ctrl-C stops the process "
        "(SIGTERM); a second Ctrl-C kills it.",
    )
    _add_spawn_options(run, "run", "[--rm] ")
    run.add_argument("--rm", action="store_true", help="delete the process and its logs once it has exited")

    ls = command("ls", _ls, "list processes, newest first", "List the processes the server knows, newest first.")
    ls.add_argument("--json", action="store_true", help="print a JSON array of process objects, as the API gives them")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    ls.add_argument("--no-trunc", action="store_true", help="do not shorten long command lines")

    inspect = command("inspect", _inspect, "print a process as JSON", "Print the process object as JSON.")
    inspect.add_argument("id", metavar="ID")

    logs = command(
        "logs",
        _logs,
        "print a process's logs (-f: follow until it exits)",
        "Print the logged lines of a process. With -f, keep printing new lines until the process "
        "has exited (surviving a server restart).",
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the process exits")
    logs.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")
    logs.add_argument("--stream", choices=STREAMS, default="combined", help="which log (default: combined)")
    logs.add_argument("--no-timestamps", action="store_true", help="drop the leading [timestamp] of each line")
    logs.add_argument("id", metavar="ID")

    for name, handler, what in (
        ("stop", _stop, "Send SIGTERM (SIGKILL after the server's stop timeout)"),
        ("kill", _kill, "Send SIGKILL"),
    ):
        parser = command(
            name,
            handler,
            f"{name} processes and wait until they have exited",
            f"{what} to each process group, then wait until the process has exited; print its id.",
        )
        parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="wait at most S seconds (30)")
        parser.add_argument("ids", nargs="+", metavar="ID")

    rm = command(
        "rm",
        _rm,
        "delete exited processes and their logs",
        "Delete each process's record and logs; print its id. A running process is refused unless --force.",
    )
    rm.add_argument("-f", "--force", action="store_true", help="kill a running process first")
    rm.add_argument("ids", nargs="+", metavar="ID")


def main(args: argparse.Namespace) -> int:
    """Run the ``process`` subcommand parsed into ``args``; return the exit status."""
    handler: Handler | None = args.process_handler
    if handler is None:
        args.process_parser.print_help(sys.stderr)
        return 2
    from ..client import Client, _protocol

    try:
        with Client(args.client_url, args.client_token) as client:
            return handler(client, args)
    except Unauthorized:
        url = _protocol.resolve_url(args.client_url)
        if _protocol.resolve_token(args.client_token):
            _error(f"the server at {url} rejected the token; pass the right one with --token or SANDBOX_AGENT_TOKEN")
        else:
            _error(f"the server at {url} needs a token; pass it with --token or set SANDBOX_AGENT_TOKEN")
    except ConnectionFailed as exc:
        _error(f"{exc}; is the server running? (--url or SANDBOX_AGENT_URL)")
    except SandboxAgentError as exc:
        _error(str(exc))
    except TimeoutError as exc:
        _error(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``... | head``): exit quietly, as cat would.
        _silence_stdout()
        return 141
    return 1


# -- commands ---------------------------------------------------------------------


def _start(client: Client, args: argparse.Namespace) -> int:
    command = _command(args)
    process = client.start(command[0], command[1:], cwd=args.cwd, env=dict(args.env or ()))
    print(process.id)
    return 0


def _run(client: Client, args: argparse.Namespace) -> int:
    command = _command(args)
    process = client.start(command[0], command[1:], cwd=args.cwd, env=dict(args.env or ()))
    _stream_output(client, process.id, args)
    final = client.get(process.id)
    if args.rm:
        client.delete(process.id)
    return exit_status(final)


def _ls(client: Client, args: argparse.Namespace) -> int:
    processes = client.list()
    if args.json:
        print(json.dumps([p.to_wire() for p in processes], indent=2))
    elif args.quiet:
        for process in processes:
            print(process.id)
    else:
        print(format_table(processes, width=None if args.no_trunc else _COMMAND_WIDTH), end="")
    return 0


def _inspect(client: Client, args: argparse.Namespace) -> int:
    print(json.dumps(client.get(args.id).to_wire(), indent=2))
    return 0


def _logs(client: Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"stream": args.stream, "tail": args.tail, "strip_timestamps": args.no_timestamps}
    if not args.follow:
        sys.stdout.write(client.logs(args.id, **options).content)
        return 0
    for line in client.follow(args.id, **options):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def _stop(client: Client, args: argparse.Namespace) -> int:
    def stop(process_id: str) -> None:
        client.stop(process_id)
        client.wait(process_id, timeout=args.timeout)

    return _each(args.ids, stop)


def _kill(client: Client, args: argparse.Namespace) -> int:
    def kill(process_id: str) -> None:
        client.kill(process_id)
        client.wait(process_id, timeout=args.timeout)

    return _each(args.ids, kill)


def _rm(client: Client, args: argparse.Namespace) -> int:
    def remove(process_id: str) -> None:
        if args.force:
            client.kill(process_id)
            client.wait(process_id, timeout=30)
        client.delete(process_id)

    return _each(args.ids, remove)


# -- run: streaming, Ctrl-C ---------------------------------------------------------


def _stream_output(client: Client, process_id: str, args: argparse.Namespace) -> None:
    """Print the process's output, split by stream, until it exits; Ctrl-C stops it.

    A thread reads the follow and queues its lines; this thread prints them and acts on
    Ctrl-C, which the signal handler only records (in the same queue, which is safe to
    put to from a handler), so that a line is never lost to an interrupt.
    """
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    done = threading.Event()

    from ..client import Client

    def pump() -> None:
        try:
            with Client(args.client_url, args.client_token) as reader:
                for line in reader.follow(process_id, strip_timestamps=True):
                    if done.is_set():
                        return
                    events.put(("line", line))
        except BaseException as exc:
            events.put(("error", exc))
        else:
            events.put(("exit", None))

    def interrupted(signum: int, frame: FrameType | None) -> None:
        events.put(("interrupt", None))

    # Not where signals cannot be handled, nor where SIGINT is ignored (a background job).
    handle = (
        threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    )
    previous = signal.signal(signal.SIGINT, interrupted) if handle else None
    reader = threading.Thread(target=pump, name=f"follow {process_id}", daemon=True)
    reader.start()
    interrupts = 0
    last: TextIO = sys.stdout
    try:
        while True:
            kind, value = events.get()
            if kind == "line":
                target, text = _split_stream(value)
                if target is not last:
                    last.flush()
                    last = target
                target.write(text + "\n")
                if events.empty():
                    target.flush()
            elif kind == "interrupt":
                interrupts += 1
                if interrupts == 1:
                    _error(f"stopping process {process_id} (Ctrl-C again to kill it)")
                    client.stop(process_id)
                else:
                    _error(f"killing process {process_id}")
                    client.kill(process_id)
            elif kind == "error":
                raise value
            else:
                return
    finally:
        done.set()
        sys.stdout.flush()
        sys.stderr.flush()
        if handle:
            signal.signal(signal.SIGINT, previous)


def _split_stream(line: str) -> tuple[TextIO, str]:
    tag, _, text = line.partition(" ")
    if tag == "[stderr]":
        return sys.stderr, text
    if tag == "[stdout]":
        return sys.stdout, text
    return sys.stdout, line


def exit_status(process: Process) -> int:
    """The shell's view of how ``process`` ended: its code, or 128+N for signal N."""
    if process.exit_code is not None:
        return process.exit_code
    if process.exit_signal is not None:
        return 128 + process.exit_signal
    if process.status == "killed":
        return 128 + signal.SIGKILL
    return 1


# -- formatting -----------------------------------------------------------------------


def describe_status(process: Process) -> str:
    """``running``, ``stopped (exit 0)``, ``stopped (SIGTERM)``, ``killed (SIGKILL)``."""
    if process.exit_code is not None:
        return f"{process.status} (exit {process.exit_code})"
    if process.exit_signal is not None:
        try:
            name = signal.Signals(process.exit_signal).name
        except ValueError:
            name = f"signal {process.exit_signal}"
        return f"{process.status} ({name})"
    return process.status


def command_line(process: Process, width: int | None = None) -> str:
    text = shlex.join([process.command, *process.args]).replace("\n", "\\n").replace("\t", "\\t")
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def format_table(processes: Sequence[Process], width: int | None = _COMMAND_WIDTH) -> str:
    """The ``process ls`` table: aligned columns, one process a line, a header first."""
    rows = [("ID", "STATUS", "PID", "STARTED", "COMMAND")]
    for p in processes:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.started_at))
        pid = str(p.pid) if p.pid is not None else "-"
        rows.append((p.id, describe_status(p), pid, started, command_line(p, width)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["   ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)), row[4]]) for row in rows]
    return "".join(line.rstrip() + "\n" for line in lines)


# -- helpers --------------------------------------------------------------------------


def _add_spawn_options(parser: argparse.ArgumentParser, name: str, more: str = "") -> None:
    parser.usage = f"sandbox-agent process {name} [-h] [--cwd DIR] [--env KEY=VALUE]... {more}-- CMD [ARGS...]"
    parser.add_argument("--cwd", metavar="DIR", help="working directory (default: the server's)")
    parser.add_argument(
        "--env",
        action="append",
        type=_env_pair,
        metavar="KEY=VALUE",
        help="set an environment variable, over the server's environment (repeatable)",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="what to run")
    parser.set_defaults(spawn_parser=parser)


def _command(args: argparse.Namespace) -> list[str]:
    command: list[str] = args.argv
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        args.spawn_parser.error("give the command to run after --, for example: -- python -c 'print(1)'")
    return command


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of lines, 0 or more, got {text!r}")
    return value


def _each(ids: Sequence[str], action: Callable[[str], object]) -> int:
    """Apply ``action`` to each id, printing it on success; 1 if any failed."""
    status = 0
    for process_id in ids:
        try:
            action(process_id)
        except (BadRequest, NotFound, Conflict, TimeoutError) as exc:
            _error(str(exc))
            status = 1
        else:
            print(process_id)
    return status


def _error(message: str) -> None:
    print(f"sandbox-agent: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

"""``sandbox-agent process ...``: the command line client of the API.

Every command talks to a server through ``Client``; none reads the data dir, so the same
commands drive a remote sandbox. Failures the user can do something about (no server, a
bad token, an unknown id) end in one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._exceptions import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    ReadinessTimeout,
    SandboxAgentError,
    Unauthorized,
)
from .._types import STREAMS
from ._attach import DEFAULT_DETACH_KEYS, parse_detach_keys, window_size
from ._examples import EXAMPLES, PROCESS_EXAMPLES
from ._services import add_filter_options, add_service_options, filters, not_ready, prune, service_options

__all__ = ["add_parser", "main"]

if TYPE_CHECKING:
    # Imported when a command runs: `sandbox-agent server` builds this parser too, and
    # has no use for httpx or the client's models (they would stay in its memory).
    from ..client import Client
    from ..models import Process

Handler = Callable[["Client", argparse.Namespace], int]

_RAW = argparse.RawDescriptionHelpFormatter
_COMMAND_WIDTH = 60


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
            name, help=help, description=textwrap.fill(description, 88), epilog=EXAMPLES[name], formatter_class=_RAW
        )
        parser.set_defaults(process_handler=handler, process_parser_current=parser)
        return parser

    start = command(
        "start",
        _start,
        "start a process in the background, print its id",
        "Start CMD with ARGS in the background and print the id of the new process. With -t it runs "
        "on a terminal, with -i its stdin takes input (process input); with -it your terminal is "
        "attached to it at once (see process attach).",
    )
    _add_spawn_options(start, "start", "[--name NAME] [--wait-for COND] [-i] [-t] [--detach-keys KEYS] ")
    _add_terminal_options(start)
    add_service_options(start, readiness=True)

    run = command(
        "run",
        _run,
        "start a process and stream its output until it exits",
        "Start CMD, print its stdout on stdout and its stderr on stderr as it runs, and exit "
        "with its exit status (128+N when signal N ended it). Piped stdin is forwarded to it "
        "(-i forwards a terminal's too); otherwise its stdin is empty. Ctrl-C, SIGTERM or SIGHUP "
        "stops the process (SIGTERM); a second one kills it. With -it your terminal is attached "
        "to it, as with process attach, until it exits.",
    )
    _add_spawn_options(run, "run", "[--rm] [--name NAME] [-i] [-t] [--detach-keys KEYS] ")
    _add_terminal_options(run)
    add_service_options(run, readiness=False)
    run.add_argument("--rm", action="store_true", help="delete the process and its logs once it has exited")

    attach = command(
        "attach",
        _attach,
        "attach your terminal to a process's terminal",
        "Join your terminal to the terminal of a running process started with a tty (start -t): "
        "what you type reaches it, Ctrl-C included, and its window follows yours. The detach keys "
        "(Ctrl-P Ctrl-Q, as Docker's; --detach-keys to change) leave it running; when it exits, so "
        "does this command, with its exit code.",
    )
    attach.add_argument(
        "--detach-keys",
        default=None,
        metavar="KEYS",
        help=f"keys that detach, comma-separated ctrl-<c> or characters (default {DEFAULT_DETACH_KEYS}; '' for none)",
    )
    attach.add_argument(
        "--replay", type=_count, default=0, metavar="BYTES", help="first show up to BYTES of recent output (0)"
    )
    attach.add_argument("id", metavar="ID")

    input_ = command(
        "input",
        _input,
        "send input to a process's terminal or stdin",
        "Send DATA (as UTF-8; '-' reads it from stdin) to the terminal of a tty process or to the "
        "stdin of an interactive one (start -i). --eof then closes its stdin (^D on a terminal).",
    )
    input_.add_argument("--eof", action="store_true", help="close the process's stdin after DATA")
    input_.add_argument("id", metavar="ID")
    input_.add_argument("data", nargs="?", metavar="DATA", help="what to send; '-' for stdin")

    exec_ = command(
        "exec",
        _exec,
        "run a command to its end on the server, print its output",
        "Run CMD on the server to its end (POST /v1/processes/run), print its stdout on stdout and "
        "its stderr on stderr, and exit with its exit code: 124 if it timed out. Not recorded as "
        "a process; stdin is empty.",
    )
    exec_.usage = (
        "sandbox-agent process exec [-h] [--cwd DIR] [--env KEY=VALUE]... [--timeout S] [--max-output BYTES] "
        "-- CMD [ARGS...]"
    )
    exec_.add_argument("--cwd", metavar="DIR", help=_CWD_HELP)
    exec_.add_argument("--env", action="append", type=_env_pair, metavar="KEY=VALUE", help=_ENV_HELP)
    exec_.add_argument(
        "--timeout", type=float, metavar="S", help="kill it (its whole group) after S seconds (server default 30)"
    )
    exec_.add_argument(
        "--max-output", type=_count, metavar="BYTES", help="keep at most BYTES of each of stdout and stderr"
    )
    exec_.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="what to run")
    exec_.set_defaults(spawn_parser=exec_)

    wait = command(
        "wait",
        _wait,
        "wait until a process exits, exit with its code",
        "Wait until the process (an id or a name) has exited and exit with its exit status (128+N "
        "when signal N ended it); 124 if --timeout passes first. With --ready: until it is ready "
        "(it was started with --wait-for), then exit 0; 1 if it exited first.",
    )
    wait.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    wait.add_argument("--ready", action="store_true", help="wait until it is ready, not until it exits")
    wait.add_argument("id", metavar="ID")

    ls = command("ls", _ls, "list processes, newest first", "List the processes the server knows, newest first.")
    ls.add_argument("--json", action="store_true", help="print a JSON array of process objects, as the API gives them")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    ls.add_argument("--no-trunc", action="store_true", help="do not shorten long command lines")
    add_filter_options(ls)

    command(
        "prune",
        prune,
        "delete every exited process and its logs",
        "Delete the record and logs of every process that has exited; print their ids.",
    )

    inspect = command("inspect", _inspect, "print a process as JSON", "Print the process object as JSON.")
    inspect.add_argument("id", metavar="ID")

    logs = command(
        "logs",
        _logs,
        "print a process's logs (-f: follow until it exits)",
        "Print the logged lines of a process; a line a progress bar rewrote (carriage returns) "
        "shows its last frame. With -f, keep printing new lines until the process has exited "
        "(surviving a server restart), then exit with its exit status.",
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

    restart = command(
        "restart",
        _restart,
        "restart running processes now",
        "End the current run of each process as stop does (SIGTERM, SIGKILL after the stop timeout) and start "
        "its command again at once, under the same id, logs and restart policy (policy or not); print its id "
        "once the new run started. An exited process is refused: start it again.",
    )
    restart.add_argument("ids", nargs="+", metavar="ID")

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
    keys = _detach_keys(args)
    try:
        process = _spawn(client, args, tty=args.tty, interactive=args.interactive)
    except ReadinessTimeout as exc:
        _error(str(exc))
        return 124
    failed = not_ready(process)
    if failed is not None:
        _error(failed)
        return 1
    if not (args.tty and args.interactive):
        print(process.id)
        return 0
    status = _attach_and_report(client, process.id, keys, replay=_REPLAY_ALL)
    return 0 if status is None else status


def _run(client: Client, args: argparse.Namespace) -> int:
    from ._run import piped_stdin, stream_output

    keys = _detach_keys(args)
    if args.tty and args.interactive:
        process = _spawn(client, args, tty=True, interactive=True)
        status = _attach_and_report(client, process.id, keys, replay=_REPLAY_ALL, stop_on_signal=True)
        if status is None:
            return 0  # detached: it runs on, --rm or not
    else:
        stdin = sys.stdin.fileno() if args.interactive else piped_stdin()
        process = _spawn(client, args, tty=args.tty, interactive=stdin is not None)
        stream_output(client, process.id, args.client_url, args.client_token, stdin)
    final = client.wait(process.id, timeout=30)
    if args.rm:
        client.delete(process.id)
    return exit_status(final)


def _attach(client: Client, args: argparse.Namespace) -> int:
    keys = _detach_keys(args)
    status = _attach_and_report(client, args.id, keys, replay=args.replay or None)
    return 0 if status is None else status


def _input(client: Client, args: argparse.Namespace) -> int:
    if args.data is None and not args.eof:
        args.process_parser_current.error("give DATA to send, '-' to send stdin, or --eof")
    if args.data == "-":
        limit = client.processes.get_config().max_input_bytes_per_request
        while data := sys.stdin.buffer.read(limit):
            client.processes.input(args.id, data)
        if args.eof:
            client.processes.input(args.id, eof=True)
    else:
        client.processes.input(args.id, args.data or "", eof=args.eof)
    return 0


def _exec(client: Client, args: argparse.Namespace) -> int:
    command = _command(args)
    result = client.processes.run(
        command[0],
        command[1:],
        cwd=_cwd(args),
        env=dict(args.env or ()),
        timeout=args.timeout,
        max_output_bytes=args.max_output,
    )
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    sys.stderr.flush()
    for stream, truncated in (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated)):
        if truncated:
            _error(f"its {stream} was cut at the output limit (--max-output, or the server's maxOutputBytes)")
    if result.timed_out:
        _error(f"timed out after {result.duration_ms / 1000:g} s; it was killed")
        return 124
    if result.exit_code is None:
        _error("it was ended by a signal")
        return 1
    return result.exit_code


def _wait(client: Client, args: argparse.Namespace) -> int:
    # By id: a name may pass to another process once this one exits.
    process_id = client.get(args.id).id
    try:
        if args.ready:
            process = client.wait(process_id, timeout=args.timeout, until="ready")
            if process.ready:
                return 0
            _error(not_ready(process) or f"process {process_id} is not ready")
            return 1
        return exit_status(client.wait(process_id, timeout=args.timeout))
    except TimeoutError as exc:
        _error(str(exc))
        return 124


def _ls(client: Client, args: argparse.Namespace) -> int:
    processes = client.list(**filters(args))  # type: ignore[arg-type]
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
    from ._run import last_frame

    options: dict[str, Any] = {"stream": args.stream, "tail": args.tail, "strip_timestamps": args.no_timestamps}
    if not args.follow:
        content = client.logs(args.id, **options).content
        sys.stdout.write("".join(last_frame(line) + "\n" for line in content.split("\n")[:-1]))
        return 0
    for line in client.follow(args.id, **options):
        sys.stdout.write(last_frame(line) + "\n")
        sys.stdout.flush()
    return exit_status(client.wait(args.id, timeout=30))


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


def _restart(client: Client, args: argparse.Namespace) -> int:
    return _each(args.ids, client.restart)


def _rm(client: Client, args: argparse.Namespace) -> int:
    def remove(process_id: str) -> None:
        if args.force:
            client.kill(process_id)
            client.wait(process_id, timeout=30)
        client.delete(process_id)

    return _each(args.ids, remove)


# -- terminals --------------------------------------------------------------------------

#: For start -it and run -it: all the output since the start (a prompt printed before the
#: terminal was attached), which is far less than this.
_REPLAY_ALL = 1 << 20


def _detach_keys(args: argparse.Namespace) -> bytes:
    text = args.detach_keys if args.detach_keys is not None else DEFAULT_DETACH_KEYS
    try:
        return parse_detach_keys(text)
    except ValueError as exc:
        args.process_parser_current.error(f"--detach-keys: {exc}")
        raise  # not reached: error() exits


def _attach_and_report(
    client: Client, process_id: str, keys: bytes, *, replay: int | None, stop_on_signal: bool = False
) -> int | None:
    """Attach; the process's exit status once it exited, None when detached."""
    from ._attach import attach

    sys.stdout.flush()
    result = attach(client, process_id, detach_keys=keys, replay=replay)
    if result.exited:
        return exit_status(client.wait(process_id, timeout=30))
    if result.reason == "signal" and stop_on_signal:
        _error(f"stopping process {process_id}")
        client.stop(process_id)
        return exit_status(client.wait(process_id, timeout=60))
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # off the process's last line
    _error(f"detached from process {process_id}; it keeps running: sandbox-agent process attach {process_id}")
    return None


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
    # NAME and PORTS only when a process has one: a plain listing keeps its columns.
    named = any(p.name for p in processes)
    ported = any(p.ports for p in processes)
    head = ["ID", *(["NAME"] if named else []), "STATUS", "PID", *(["PORTS"] if ported else []), "STARTED"]
    rows = [(*head, "COMMAND")]
    for p in processes:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.started_at))
        pid = str(p.pid) if p.pid is not None else "-"
        name = [p.name or "-"] if named else []
        ports = [",".join(map(str, p.ports)) if p.ports else "-"] if ported else []
        rows.append((p.id, *name, describe_status(p), pid, *ports, started, command_line(p, width)))
    n = len(head)
    widths = [max(len(row[i]) for row in rows) for i in range(n)]
    lines = ["   ".join([*(cell.ljust(w) for cell, w in zip(row[:n], widths, strict=True)), row[n]]) for row in rows]
    return "".join(line.rstrip() + "\n" for line in lines)


# -- helpers --------------------------------------------------------------------------


_CWD_HELP = "working directory (default: yours with a server on this machine, else the server's)"
_ENV_HELP = "set an environment variable, over the server's environment (repeatable)"


def _add_spawn_options(parser: argparse.ArgumentParser, name: str, more: str = "") -> None:
    parser.usage = f"sandbox-agent process {name} [-h] [--cwd DIR] [--env KEY=VALUE]... {more}-- CMD [ARGS...]"
    parser.add_argument("--cwd", metavar="DIR", help=_CWD_HELP)
    parser.add_argument("--env", action="append", type=_env_pair, metavar="KEY=VALUE", help=_ENV_HELP)
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="what to run")
    parser.set_defaults(spawn_parser=parser)


def _add_terminal_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--tty", action="store_true", help="run it on a terminal (pty) of its own")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep its stdin open for input")
    parser.add_argument(
        "--detach-keys",
        default=None,
        metavar="KEYS",
        help="with -it: keys that detach, comma-separated ctrl-<c> or characters (default ctrl-p,ctrl-q)",
    )


def _spawn(client: Client, args: argparse.Namespace, *, tty: bool, interactive: bool) -> Process:
    command = _command(args)
    size = window_size() if tty else None
    return client.start(
        command[0],
        command[1:],
        cwd=_cwd(args),
        env=dict(args.env or ()),
        tty=tty,
        interactive=interactive,
        terminal_size=size,
        **service_options(args),  # type: ignore[arg-type]
    )


def _cwd(args: argparse.Namespace) -> str | None:
    """--cwd, else the caller's own directory when the server runs on this machine (as pm2
    does), else None: the server's."""
    if args.cwd is not None:
        return str(args.cwd)
    if not is_local(args.client_url):
        return None
    try:
        return os.getcwd()
    except OSError:
        return None  # the directory was removed under us: let the server choose


def is_local(url: str | None) -> bool:
    """Whether the server at ``url`` (or the default) listens on this machine's loopback."""
    from ..client import _protocol

    host = urlsplit(_protocol.resolve_url(url)).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


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

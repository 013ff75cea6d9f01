"""The command line's services options (SPEC section 8): names, labels, readiness, prune.

``process start --name web --wait-for port:3000 -- npm run dev`` prints the id once the
server says the process is ready; ``process ls --status running --label app=shop``
filters; ``process prune`` deletes every exited process. ``--restart on-failure:5`` gives
a restart policy (Docker's syntax), ``process restart NAME`` restarts now.
"""

from __future__ import annotations

import argparse
import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # The models are imported where they are used: `sandbox-agent server` builds these
    # options too, and has no use for them (see _process).
    from ..client import Client
    from ..models import Process, Restart, WaitFor

__all__ = [
    "add_filter_options",
    "add_service_options",
    "filters",
    "not_ready",
    "prune",
    "service_options",
]

_STATUSES = ("running", "exited", "starting", "stopped", "killed")


def _wait_for(text: str) -> WaitFor:
    from ..models import WaitFor

    try:
        return WaitFor.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _restart(text: str) -> Restart:
    from ..models import Restart

    try:
        return Restart.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key or not sep:
        raise argparse.ArgumentTypeError(f"label {text!r}: give KEY=VALUE")
    return key, value


def add_service_options(parser: argparse.ArgumentParser, *, readiness: bool) -> None:
    parser.add_argument("--name", metavar="NAME", help="a name that works wherever an id does (unique while it runs)")
    parser.add_argument(
        "--label", action="append", type=_label, metavar="KEY=VALUE", help="a label to filter by (repeatable)"
    )
    if readiness:
        parser.add_argument(
            "--wait-for",
            action="append",
            type=_wait_for,
            metavar="port:PORT|log:REGEX|http:URL",
            help="print the id only once the process listens on PORT, logged a line matching REGEX, or URL "
            "answers 2xx/3xx (repeatable: all must hold); exit 1 if it exits first, 124 past --wait-timeout",
        )
        parser.add_argument(
            "--wait-timeout", type=float, metavar="S", help="give up waiting for --wait-for after S seconds (60)"
        )
        parser.add_argument(
            "--restart",
            type=_restart,
            metavar="never|on-failure[:N]|always[:N]",
            help="start it again when it exits (on-failure: not after exit code 0), at most N times in a row; "
            "done by the server's supervisor, even while no server is up; stop and kill end it",
        )
        parser.add_argument(
            "--restart-backoff",
            type=int,
            metavar="MS",
            help="wait MS before the first restart of a row, doubling up to 30 s (1000)",
        )


def service_options(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments of ``Client.start`` for the options of ``add_service_options``."""
    from ..models import Restart, WaitFor

    wait_for = None
    if getattr(args, "wait_for", None):
        wait_for = functools.reduce(lambda a, b: a & b, args.wait_for)
        if args.wait_timeout is not None:
            wait_for = WaitFor(
                wait_for.port, wait_for.log_pattern, wait_for.http_get, max(0, round(args.wait_timeout * 1000))
            )
    options: dict[str, object] = {
        "name": args.name,
        "labels": dict(args.label) if args.label else None,
        "wait_for": wait_for,
    }
    restart_policy: Restart | None = getattr(args, "restart", None)
    backoff = getattr(args, "restart_backoff", None)
    if backoff is not None:
        restart_policy = Restart(
            restart_policy.policy if restart_policy else "on-failure",
            restart_policy.max_restarts if restart_policy else None,
            backoff,
        )
    if restart_policy is not None:
        options["restart"] = restart_policy
    return options


def not_ready(process: Process) -> str | None:
    """What to say when a start with --wait-for answered with a process that is not ready."""
    if process.ready is False and process.exited:
        code = process.exit_code if process.exit_code is not None else process.exit_signal
        return (
            f"process {process.id} exited ({process.status}, {code}) before it was ready; "
            f"see sandbox-agent process logs {process.id}"
        )
    return None


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=_STATUSES, help="only processes with this status (running, exited, ...)")
    parser.add_argument(
        "--label", action="append", metavar="KEY=VALUE", help="only processes with this label (KEY: any value)"
    )
    parser.add_argument("--name", metavar="NAME", help="only processes with this name")


def filters(args: argparse.Namespace) -> dict[str, object]:
    return {"status": args.status, "labels": args.label, "name": args.name}


def prune(client: Client, args: argparse.Namespace) -> int:
    for process_id in client.prune():
        print(process_id)
    return 0

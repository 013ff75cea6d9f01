"""Watching supervisors: adoption at start-up, exits, lost supervisors, orphans, retention.

A mixin of the manager (``manager.py``). A supervisor is watched through a pidfd (or, with
no descriptor to be had, by polling its pid and start time) and its state record through
inotify, so the engine learns of a command's exit even while its supervisor still pumps
what descendants write or waits for them to end.

On a full disk the supervisor cannot replace state.json at the exit: it writes the exit
into the exit record it made at the start (``ondisk.EXIT_FILE``) instead, and never
touches state.json again. The engine reads the exit from there (``read_state_with_exit``),
keeps the full record in memory (``Record.unsaved``, shown in the API) and writes
state.json itself as soon as there is room, trying again every second.
"""

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..supervisor.ondisk import (
    EXITED_STATUSES,
    STATE_FILE,
    boot_id,
    process_start_ticks,
    read_state_with_exit,
    write_json_atomic,
)
from . import system
from .ids import ID_PATTERN
from .logs.watch import StateWatch
from .records import Record
from .state import ManagerState

logger = logging.getLogger("sandbox_agent.engine")

_REAP_INTERVAL = 1.0
#: Exits told before their spawn's answer was taken, kept at most (the oldest go first).
_EARLY_EXITS = 64


def _remove_leftovers(directory: str, state: dict[str, Any] | None) -> None:
    """Remove the temporary files of state writes cut short (``state.json.<pid>.tmp``),
    but not the one of the record's supervisor while it lives: it may be writing it now."""
    live = None
    if (
        state is not None
        and state.get("supervisorStart") is not None
        and process_start_ticks(state.get("supervisorPid") or 0) == state["supervisorStart"]
    ):
        live = f"{STATE_FILE}.{state['supervisorPid']}.tmp"
    for leftover in Path(directory).glob(f"{STATE_FILE}.*.tmp"):
        if leftover.name != live:
            leftover.unlink(missing_ok=True)


class SupervisorWatching(ManagerState):
    """The manager's watch over supervisors and records (see ``ProcessManager``)."""

    if TYPE_CHECKING:

        def _drop_feed(self, record: Record, stream: str) -> None: ...

        def _service_exited(self, record: Record) -> None: ...

        def _service_forgotten(self, record: Record) -> None: ...

        def _run_changed(self, record: Record, before: dict[str, Any]) -> None: ...

    def _load_records(self) -> None:
        our_boot = boot_id()
        for entry in os.scandir(self.processes_dir):
            if not ID_PATTERN.fullmatch(entry.name) or not entry.is_dir():
                continue
            try:
                state, unsaved = read_state_with_exit(entry.path)
            except FileNotFoundError:
                _remove_leftovers(entry.path, None)
                continue  # a spawn that never started: nothing to show
            except (OSError, ValueError) as exc:
                logger.error("skipping %s: unusable state record (%s)", entry.path, exc)
                continue
            _remove_leftovers(entry.path, state)
            if state["id"] != entry.name:
                # Keyed by its directory: a record copied or edited into another one's
                # place must not speak for that process (or signal its pid).
                logger.error("skipping %s: its state record names another process (%s)", entry.path, state["id"])
                continue
            record = Record(entry.path, state)
            self._records[record.id] = record
            self._maybe_running.add(record)
            if unsaved:
                self._keep_unsaved(record, state)
            if record.exited:
                if state.get("bootId") == our_boot:
                    # Its supervisor may still pump what descendants write: watched, so
                    # that kill and delete still reach them.
                    self._watch_supervisor(record, state)
                continue
            if state.get("bootId") == our_boot and self._watch_supervisor(record):
                self._watch_state(record)
                continue
            self._settle_lost(record)
        self._ordered = None
        self._prune()
        logger.info("loaded %d processes from %s", len(self._records), self.processes_dir)

    def _watch_supervisor(self, record: Record, state: dict[str, Any] | None = None) -> bool:
        """Watch the record's supervisor for exit; False if it is already gone.

        ``state``: the full state record, for an exited record (whose ``state`` no longer
        holds the supervisor's identity).
        """
        state = record.state if state is None else state
        pid = state.get("supervisorPid")
        if not isinstance(pid, int):
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                return False  # gone (ESRCH)
            # Our own shortage says nothing about the supervisor: watch it by polling
            # its pid and start time until a pidfd can be had.
            if process_start_ticks(pid) != state.get("supervisorStart"):
                return False
            logger.warning("process %s: no file descriptor for a pidfd (%s); polling its supervisor", record.id, exc)
            self._polled.add(record)
            record.supervisor_pid = pid
            return True
        # Checked after the pidfd is open, so the pid cannot be reused in between.
        if process_start_ticks(pid) != state.get("supervisorStart"):
            os.close(pidfd)
            return False
        self._polled.discard(record)
        record.pidfd = pidfd
        record.supervisor_pid = pid
        asyncio.get_running_loop().add_reader(pidfd, self._on_supervisor_exit, record)
        return True

    def _poll_unwatched(self) -> None:
        """Check the supervisors watched without a pidfd; take a pidfd when one can be had."""
        for record in list(self._polled):
            if record.exited or record.pidfd is not None:
                self._polled.discard(record)
            elif not self._watch_supervisor(record):
                self._polled.discard(record)
                self._on_supervisor_exit(record)

    def _unwatch_supervisor(self, record: Record) -> None:
        self._polled.discard(record)
        record.supervisor_pid = None
        if record.pidfd is not None:
            asyncio.get_running_loop().remove_reader(record.pidfd)
            os.close(record.pidfd)
            record.pidfd = None

    def _watch_state(self, record: Record) -> None:
        """Learn of the command's exit when the supervisor records it: the supervisor
        itself may run on, pumping what descendants of the command still write."""
        record.state_watch = StateWatch(record.dir, lambda: self._on_state_change(record))
        self._watcher.watch(record.state_watch)
        self._on_state_change(record)  # recorded before the watch began

    def _unwatch_state(self, record: Record) -> None:
        if record.state_watch is not None:
            self._watcher.unwatch(record.state_watch)
            record.state_watch = None

    def _on_state_change(self, record: Record) -> None:
        if record.state_watch is None:
            return
        if record.exited:
            if record.exit_told:
                self._confirm_exit(record)
            return
        try:
            state, unsaved = read_state_with_exit(record.dir)
        except (OSError, ValueError):
            return  # the supervisor's exit settles it
        if state != record.state:
            before = record.state
            record.update(state)
            if unsaved:
                self._keep_unsaved(record, state)
            if record.exited:
                self._on_exit(record)
            else:
                self._run_changed(record, before)

    def _on_exit_told(self, state: dict[str, Any], sender: int) -> None:
        """A supervisor's exit message (``LauncherClient.on_exit``): the record it is
        about to write, sent by the process ``sender``."""
        process_id = state.get("id")
        if not isinstance(process_id, str):
            return
        record = self._records.get(process_id)
        if record is not None:
            self._take_told_exit(record, state, sender)
        elif ID_PATTERN.fullmatch(process_id):
            # Its spawn's answer may still wait in the launcher's socket: taken with it.
            self._early_exits[process_id] = (state, sender)
            while len(self._early_exits) > _EARLY_EXITS:
                del self._early_exits[next(iter(self._early_exits))]

    def _take_told_exit(self, record: Record, state: dict[str, Any], sender: int) -> None:
        """Show the exit a supervisor told before it wrote it; the watch on its record
        stays until the record holds it (``_confirm_exit``)."""
        if (
            record.exited
            or record.state_watch is None
            or sender != record.supervisor_pid
            or state.get("status") not in EXITED_STATUSES
        ):
            return  # only the record's own supervisor speaks for it, and only of its exit
        record.update(state)
        record.exit_told = True
        self._on_exit(record)

    def _confirm_exit(self, record: Record, final: bool = False) -> None:
        """Take the exit from the record once the supervisor has written it, and end the
        watch. ``final``: the supervisor has ended; if it never wrote the exit it told,
        the engine writes it."""
        try:
            state, unsaved = read_state_with_exit(record.dir)
        except (OSError, ValueError):
            state, unsaved = None, False
        if state is not None and state["status"] in EXITED_STATUSES:
            if state != record.state:
                record.update(state)
            if unsaved:
                self._keep_unsaved(record, state)
        elif not final:
            return  # not written yet
        else:
            logger.warning("process %s: its supervisor ended before recording the exit it told", record.id)
            self._keep_unsaved(record, record.state)
        record.exit_told = False
        self._unwatch_state(record)

    def _on_supervisor_exit(self, record: Record) -> None:
        self._unwatch_supervisor(record)
        if record.exited:
            # Descendants may have written on (and rotated logs) after the exit: the final
            # record says how much was dropped.
            if record.exit_told:
                # Its read of the record is the final one (or it writes the exit told).
                self._confirm_exit(record, final=True)
            elif record.unsaved is None:  # else the engine's copy is the newer one
                with contextlib.suppress(OSError, ValueError):
                    state, _unsaved = read_state_with_exit(record.dir)
                    if state["status"] in EXITED_STATUSES:
                        record.update(state)
            # The exit of the command was seen when recorded; now it may be pruned.
            if self.retain_exited is not None:
                self._prune()
            return
        try:
            state, unsaved = read_state_with_exit(record.dir)
        except (OSError, ValueError) as exc:
            logger.error("cannot read the state of %s after its supervisor exited: %s", record.id, exc)
            state, unsaved = record.state, False
        record.update(state)
        if unsaved:
            self._keep_unsaved(record, state)
        if not record.exited:
            self._settle_lost(record)
        self._on_exit(record)

    def _on_exit(self, record: Record) -> None:
        """The command exited (recorded in ``record.state``): tell followers and waiters."""
        self._ordered = None
        self._maybe_running.discard(record)
        for feed in record.feeds.values():
            feed.finish(record.state)
        self.terminals.exited(record)
        for waiter in (*record.waiters, *record.run_waiters):
            if not waiter.done():
                waiter.set_result(None)
        record.waiters.clear()
        record.run_waiters.clear()
        if not record.exit_told:
            self._unwatch_state(record)
        self._service_exited(record)
        if self.retain_exited is not None:
            self._prune()

    def _prune(self) -> None:
        """Forget the exited processes past the retention limits (oldest exits first)."""
        if self.retain_exited is None and self.retain_seconds is None:
            return
        # Not while descendants of the command still write through its supervisor.
        exited = sorted(
            (r for r in self._records.values() if r.exited and r.pidfd is None and r not in self._polled),
            key=lambda r: (r.stopped_at or r.started_at, r.id),
        )
        doomed = exited[: max(0, len(exited) - self.retain_exited)] if self.retain_exited is not None else []
        if self.retain_seconds is not None:
            horizon = time.time() - self.retain_seconds
            doomed.extend(r for r in exited[len(doomed) :] if (r.stopped_at or r.started_at) < horizon)
        for record in doomed:
            self._forget(record)
            # Off the loop and unawaited: removing a big log must not hold anyone up.
            asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, record.dir, True)
        if doomed:
            logger.info("retention: forgot %d exited processes", len(doomed))

    def _keep_unsaved(self, record: Record, state: dict[str, Any]) -> None:
        """``state`` is what state.json should hold and does not: keep it, and write it
        now or as soon as there is room."""
        record.unsaved = state
        record.cache.clear()
        if not self._save_unsaved(record):
            self._unsaved.add(record)
            logger.warning(
                "process %s: its record cannot be written (is the disk under %s full?); "
                "kept in memory, and written once there is room",
                record.id,
                self.data_dir,
            )

    def _save_unsaved(self, record: Record) -> bool:
        """Write the record that state.json lacks; True once it is there."""
        state = record.unsaved
        if state is not None:
            try:
                write_json_atomic(os.path.join(record.dir, STATE_FILE), state)
            except OSError:
                return False
        record.unsaved = None
        record.cache.clear()
        if record in self._unsaved:
            self._unsaved.discard(record)
            logger.info("process %s: its record is written now", record.id)
        return True

    def _forget(self, record: Record) -> None:
        self._unsaved.discard(record)
        self._maybe_running.discard(record)
        record.unsaved = None
        self._unwatch_supervisor(record)
        self._unwatch_state(record)
        for stream in list(record.feeds):
            self._drop_feed(record, stream)
        self.terminals.forget(record.id)
        self._records.pop(record.id, None)
        self._ordered = None
        self._service_forgotten(record)

    def _settle_lost(self, record: Record) -> None:
        """The supervisor is gone with no exit recorded: the process ended unseen."""
        # Read once more: it may have recorded the exit just before it went.
        with contextlib.suppress(OSError, ValueError):
            state, unsaved = read_state_with_exit(record.dir)
            record.update(state)
            if unsaved:
                self._keep_unsaved(record, state)
        if record.exited:
            return
        logger.warning("process %s: its supervisor is gone and no exit was recorded", record.id)
        self._kill_orphan(record)
        state = dict(record.state, status="stopped", exitCode=None, exitSignal=None, stoppedAt=time.time())
        # Known in memory whatever the disk does: the API must not show it running forever.
        record.update(state)
        self._keep_unsaved(record, state)

    @staticmethod
    def _kill_orphan(record: Record) -> None:
        """Kill the group of a process whose supervisor died under it, if it is still ours.

        Nobody reads its output any more and nobody would record its exit: left alone it
        would run unseen. The pid counts as ours only with the same boot and start time.
        """
        state = record.state
        pid = state.get("pid")
        if not isinstance(pid, int) or state.get("bootId") != boot_id():
            return
        if state.get("pidStart") is None or process_start_ticks(pid) != state.get("pidStart"):
            return
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(_REAP_INTERVAL)
            if self.subreaper:
                self._reap_orphans()
            self._poll_unwatched()
            for record in list(self._unsaved):
                self._save_unsaved(record)
            if self.retain_seconds is not None:
                self._prune()

    def _reap_orphans(self) -> None:
        """Reap children we never started: orphans that were handed to us.

        As a subreaper (or as PID 1 in a container) we inherit the supervisors of a
        launcher that died and every daemon a managed process left behind; unreaped,
        each would stay a zombie. The launcher itself is reaped by its own handle.
        """
        if self._runs:
            # A run's child is a child of ours too, and asyncio must be the one to reap
            # it (or its exit status is lost); orphans can wait for the next round.
            return
        for pid in system.children():
            if pid == self._launcher.pid:
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

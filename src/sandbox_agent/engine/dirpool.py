"""Process directories made ahead of the starts that take them.

On a filesystem that has seen many processes come and go, making a process's directory
and its files is the slowest part of a start: here (ext4, mounted with ``discard``)
``mkdir`` took 0.1 to 1.1 ms and each file creation 0.1 to 0.5 ms, some five of them per
start, while the caller waits. So the manager keeps a few directories ready, each with
the files every process gets (its three logs, empty, and ``exit.rec``, blank), made in a
thread between starts; a start renames one into place (one directory entry changes) and
its supervisor opens files that already exist.

A ready directory lives under ``processes/.pool/`` until taken: named ``ready-*`` only
once complete (a ``tmp-*`` one is being made), never an id, so that nothing that lists
the processes takes it for one. A server that starts removes what an earlier one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
from collections import deque
from pathlib import Path

from ..supervisor.ondisk import LOG_FILES, make_exit_record

logger = logging.getLogger("sandbox_agent.engine")

#: Directories kept ready: a burst of starts takes them all, the rest make their own.
POOL_SIZE = 4
#: How long after a start takes one the pool is filled again: after the start under way
#: (a short command's is over by then), before the next one of a steady stream. Measured
#: against 2 and 5 ms: 10 ms kept the filling off the starts best.
REFILL_DELAY = 0.01
POOL_DIR = ".pool"


class DirPool:
    """The ready directories of one manager's ``processes/`` (see the module's doc)."""

    def __init__(self, processes_dir: Path, size: int = POOL_SIZE) -> None:
        self.dir = processes_dir / POOL_DIR
        self.size = size
        self._ready: deque[Path] = deque()
        self._names = itertools.count()
        self._filling: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Remove what earlier servers left (off the loop), then fill the pool."""
        leftovers = list(self.dir.parent.glob(f"{POOL_DIR}-old-*"))
        if self.dir.exists():
            old = self.dir.with_name(f"{POOL_DIR}-old-{os.getpid()}")
            try:
                os.rename(self.dir, old)
            except OSError as exc:
                logger.warning("cannot clear the directory pool %s: %s", self.dir, exc)
                self._closed = True  # left alone: starts make their own directories
                return
            leftovers.append(old)
        self._filling = asyncio.get_running_loop().create_task(self._fill(leftovers, 0))

    def take(self, target: Path) -> bool:
        """Move a ready directory to ``target`` (which must not exist); False if none is
        ready, or it could not be moved: the caller makes ``target`` itself."""
        taken = False
        while self._ready and not taken:
            ready = self._ready.popleft()
            try:
                os.rename(ready, target)
                taken = True
            except OSError as exc:
                logger.warning("directory pool: cannot take %s (%s)", ready, exc)
        self._refill()
        return taken

    async def close(self) -> None:
        self._closed = True
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling

    def _refill(self) -> None:
        if self._closed or (self._filling is not None and not self._filling.done()):
            return
        self._filling = asyncio.get_running_loop().create_task(self._fill([], REFILL_DELAY))

    async def _fill(self, leftovers: list[Path], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        for old in leftovers:
            await asyncio.to_thread(shutil.rmtree, old, True)
        while not self._closed and len(self._ready) < self.size:
            name = next(self._names)
            try:
                ready = await asyncio.to_thread(self._make, name)
            except OSError as exc:
                # A full disk, most likely: starts make their own directories (and say so).
                logger.debug("directory pool: cannot make a directory: %s", exc)
                return
            self._ready.append(ready)

    def _make(self, name: int) -> Path:
        """One ready directory (in a thread): made under a temporary name, then renamed."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        making = self.dir / f"tmp-{name}"
        ready = self.dir / f"ready-{name}"
        try:
            making.mkdir(mode=0o700)
            for file in LOG_FILES.values():
                os.close(os.open(making / file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            make_exit_record(str(making))
            os.rename(making, ready)
        except OSError:
            shutil.rmtree(making, ignore_errors=True)
            raise
        return ready

"""A minimal inotify binding (Linux), so that followers wake when a log grows.

Only what the follow machinery needs: watch a file for modification, read events.
``Inotify.create()`` returns None where inotify is unavailable; callers then poll.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVE_SELF = 0x00000800
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
_READ_SIZE = 64 * 1024
#: An event with the longest name a directory entry may have (NAME_MAX, and its NUL).
_LARGEST_EVENT = _EVENT.size + 256


class Inotify:
    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    @classmethod
    def create(cls) -> Inotify | None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        return cls(libc, fd)

    def add_watch(self, path: str, mask: int) -> int:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, bytes]]:
        """(watch descriptor, mask, name) of the queued events; empty when none. The name
        is that of the file in a watched directory, empty for a watched file.

        Stops after a read that left room for another event: what came after it keeps
        the descriptor readable for the next call (the loop watches it level-triggered),
        and a follower woken per line is spared a second ``read`` that finds nothing.
        """
        events: list[tuple[int, int, bytes]] = []
        while True:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            pos = 0
            while pos < len(buf):
                wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
                start = pos + _EVENT.size
                events.append((wd, mask, buf[start : start + length].rstrip(b"\0")))
                pos = start + length
            if len(buf) <= _READ_SIZE - _LARGEST_EVENT:
                return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

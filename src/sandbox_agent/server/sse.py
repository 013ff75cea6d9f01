"""Rendering follow events as Server-Sent Events.

Every event carries ``id: <byte offset>``: the logical offset in the followed log just
past the last line the event covers (bytes the process ever wrote to it, so ids keep
growing when a capped log rotates). A client reconnecting with ``Last-Event-ID`` resumes
right after it. Lines dropped from a capped log before a follower got them are announced
by an ``event: gap`` (``gap_event``), which clients that do not know it skip.

A line's bytes become one ``data:`` field; a carriage return inside a line would end the
field early in an SSE parser, so it splits the line into several ``data:`` fields (the
client sees a newline there), and a trailing one (CRLF output) is dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing

from ..engine.logs import entries as _entries
from ..engine.logs import feed as _follow
from ..engine.logs import store as _logstore
from . import render as _render

KEEPALIVE = b": keepalive\n\n"


def snapshot(event: _follow.Snapshot, strip: bool) -> bytes:
    raw = _logstore.strip_timestamps(event.raw) if strip else event.raw
    data = json.dumps({"content": _logstore.decode(raw), "lines": _logstore.count_lines(raw)})
    return f"id: {event.end}\ndata: {data}\n\n".encode()


async def snapshot_pieces(event: _follow.Snapshot, strip: bool) -> AsyncIterator[bytes]:
    """The snapshot event written piece by piece, read off the event loop.

    The same bytes as ``snapshot``: one ``data:`` line (JSON escapes every newline) whose
    ``lines`` count comes last, once counted. A small snapshot is one write.
    """
    if event.end - event.start <= _logstore.PIECE_BYTES:
        yield snapshot(event, strip)
        return
    yield f'id: {event.end}\ndata: {{"content": "'.encode()
    count = 0
    pieces = event.pieces()
    while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
        if strip:
            piece = _logstore.strip_timestamps(piece)
        count += _logstore.count_lines(piece)
        yield json.dumps(_logstore.decode(piece))[1:-1].encode()
    yield f'", "lines": {count}}}\n\n'.encode()


def lines(segment: _follow.Segment, strip: bool) -> bytes:
    cached = segment.cache.get(strip)
    if cached is not None:
        return cached
    parts = []
    offset = segment.start
    texts = _logstore.decode(segment.raw).split("\n")
    for raw_line, text in zip(segment.raw.split(b"\n")[:-1], texts, strict=False):
        offset += len(raw_line) + 1
        if strip:
            text = _logstore.strip_timestamp(text)
        if "\r" in text:
            text = text.removesuffix("\r").replace("\r", "\ndata: ")
        parts.append(f"id: {offset}\ndata: {text}\n\n")
    rendered = "".join(parts).encode()
    segment.cache[strip] = rendered
    return rendered


def exit_event(event: _follow.Exit) -> bytes:
    state = event.state
    data = json.dumps(
        {"status": state.get("status"), "exitCode": state.get("exitCode"), "exitSignal": state.get("exitSignal")}
    )
    return f"id: {event.end}\nevent: exit\ndata: {data}\n\n".encode()


def gap_event(after: int, last: int) -> bytes:
    """Extension: the lines (or entries) with ids after ``after`` up to ``last`` were dropped
    from a capped log; the stream goes on after ``last``. Named, so that a client that
    knows only unnamed (or ``log``) events skips it."""
    return b'id: %d\nevent: gap\ndata: {"from":%d,"to":%d}\n\n' % (last, after, last)


async def render(events: AsyncIterator[_follow.FollowEvent], strip: bool) -> AsyncIterator[bytes]:
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, _follow.Lines):
                yield b"".join(lines(segment, strip) for segment in event.segments)
            elif isinstance(event, _follow.Snapshot):
                async for piece in snapshot_pieces(event, strip):
                    yield piece
            elif isinstance(event, _follow.Exit):
                yield exit_event(event)
            elif isinstance(event, _follow.Gap):
                yield gap_event(event.start, event.end)
            else:
                yield KEEPALIVE


def entry_events(batch: _entries.Batch, stream: str, after: int) -> bytes:
    """``event: log`` events of the entries of ``stream`` after ``after`` in ``batch``.

    Rendered once per segment and stream, whatever the number of followers.
    """
    if batch.first_line <= after:
        # A segment that starts before where this follower resumes: rare, not cached.
        return log_events(e for e in batch.entries if e.sequence > after and stream in ("combined", e.stream))
    key = ("sse", batch.first_line, stream)
    cached = batch.segment.cache.get(key)
    if cached is None:
        cached = log_events(e for e in batch.entries if stream in ("combined", e.stream))
        batch.segment.cache[key] = cached
    return cached


def log_events(entries: Iterable[_entries.Entry]) -> bytes:
    return b"".join(b"event: log\nid: %d\ndata: %s\n\n" % (e.sequence, _render.log_entry(e)) for e in entries)

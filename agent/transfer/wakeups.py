"""Fewer, larger socket reads for a stream that arrives at network speed.

At 1 Gbit/s the receiving event loop is woken for every few dozen KiB that arrive, and
each wake-up costs Python work (aiohttp's parser, the stream reader, the frame parser).
SO_RCVLOWAT makes the kernel wake the loop only once ``BATCH`` bytes are waiting. It is
lowered near the end of the body (the last bytes must not wait for more that never
come) and reset when the stream is over, since the connection is kept alive.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from shared.frames import body_pieces

BATCH = 256 << 10  # what uvloop reads in one go


async def batched_body(request: web.Request) -> AsyncIterator[bytes]:
    """``body_pieces`` of a Content-Length body, read in batches of about BATCH bytes."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    length = request.content_length
    if sock is None or length is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        async for piece in body_pieces(request.content):
            yield piece
        return
    content = request.content
    lowat = 1

    def adjust() -> None:
        nonlocal lowat
        # Body bytes not yet taken off the socket.
        waiting = length - content.total_bytes
        wanted = max(1, min(BATCH, waiting))
        if wanted != lowat:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
            except (OSError, ValueError):
                return  # the connection is going away: reading says how
            lowat = wanted

    try:
        adjust()
        async for piece in body_pieces(content):
            adjust()
            yield piece
    finally:
        with contextlib.suppress(OSError, ValueError):  # the connection may be gone already
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)

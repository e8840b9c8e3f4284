"""A deadline on the other side of a streamed request, armed only while it has the turn.

An upload is sent a chunk at a time: between chunks the sender waits for its own source
(a client, a disk, a rate cap), while a chunk is being handed over it waits for the
receiver, and after the last one it waits for the answer. Only the receiver's turns are
this deadline's: a slow source must not count against the receiver (it has deadlines of
its own), and a long upload that keeps moving is never cut short. One asyncio deadline is
moved as the turns change (a wait_for per chunk would make a task per chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from shared.errors import PvesphereError


class PeerStalled(PvesphereError):
    """The other side had the turn for longer than it may (the message says what it missed)."""


class TurnDeadline:
    def __init__(self) -> None:
        self._timeout: asyncio.Timeout | None = None
        self._why = ""

    @contextlib.asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """Run the request inside: PeerStalled once a turn of theirs runs out."""
        timeout = asyncio.timeout(None)
        self._timeout = timeout
        try:
            async with timeout:
                yield
        except TimeoutError:
            if not timeout.expired():
                raise  # a TimeoutError of the request's own
            raise PeerStalled(self._why) from None
        finally:
            self._timeout = None

    def theirs(self, seconds: float, why: str) -> None:
        """Their turn, for at most ``seconds`` from now; ``why``: what they missed, if they do."""
        if self._timeout is not None:
            self._why = why
            self._timeout.reschedule(asyncio.get_running_loop().time() + seconds)

    def ours(self) -> None:
        if self._timeout is not None:
            self._timeout.reschedule(None)


async def watched_body(
    deadline: TurnDeadline,
    chunks: AsyncIterator[bytes | memoryview],
    stall: float,
    answer_seconds: Callable[[int], float],
) -> AsyncIterator[bytes | memoryview]:
    """``chunks`` as a request body whose receiver must take each chunk within ``stall``
    seconds and answer within ``answer_seconds(bytes sent)`` of the last."""
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        deadline.theirs(stall, f"it took no data for {stall:g} s (after {sent - len(chunk)} bytes)")
        yield chunk
        deadline.ours()
    seconds = answer_seconds(sent)
    deadline.theirs(seconds, f"it did not answer within {seconds:g} s of the last byte")

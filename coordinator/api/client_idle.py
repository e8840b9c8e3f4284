"""A deadline on waiting for an upload client's bytes.

A client that opens an upload and then sends nothing would hold an upload slot for as
long as it liked. While the handler waits for the client's body (the form fields as much
as the file), a watchdog fails the body with ClientIdle once no byte has come for
``idle`` seconds. Time spent waiting for anything else (the agent, the rate cap) does not
count. The watchdog wakes once per deadline, not per read: reads only mark that they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from aiohttp import StreamReader

from coordinator.errors import CoordinatorError


class ClientIdle(CoordinatorError, TimeoutError):
    """The client sent nothing for ``seconds``.

    A TimeoutError, so that aiohttp, reading what is left of the body after the answer,
    takes it as the end of the connection rather than as an error of its own.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no data from the client for {seconds:g} s")
        self.seconds = seconds


class IdleWatch:
    """Fails ``content`` with ClientIdle when a read has waited ``idle`` seconds without a byte."""

    def __init__(self, content: StreamReader, idle: float) -> None:
        self.content = content
        self.idle = idle
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        self._seen = content.total_bytes
        self._bytes_at = self._loop.time()

    def begin(self) -> None:
        """A read of the client's body starts waiting."""
        self._waiting_since = self._loop.time()

    def end(self) -> None:
        self._waiting_since = None

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Everything inside only waits for the client."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    def _silent_for(self, now: float) -> float | None:
        """How long a waiting read has had no byte (None: nobody waits)."""
        if self.content.total_bytes != self._seen:
            # Bytes came since the last look: count from now (never stricter than the truth).
            self._seen, self._bytes_at = self.content.total_bytes, now
        if self._waiting_since is None:
            return None
        return now - max(self._waiting_since, self._bytes_at)

    async def _watch(self) -> None:
        while True:
            silent = self._silent_for(self._loop.time())
            if silent is not None and silent >= self.idle:
                self.content.set_exception(ClientIdle(self.idle))
                return
            await asyncio.sleep(self.idle - (silent or 0.0))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[IdleWatch]:
        task = asyncio.create_task(self._watch())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

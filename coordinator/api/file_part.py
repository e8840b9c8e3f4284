"""Reading the file part of a multipart upload straight off the connection.

aiohttp's BodyPartReader finds the closing boundary by gluing every chunk to the one
before it, which copies each byte of the file twice; for a multi-GiB image that was most
of the coordinator's CPU. Here the boundary is searched for in each chunk as it arrives
(and across the seam between two chunks, in a few bytes held back), and the chunks are
passed on without being copied. Each read marks that it waits for the client
(client_idle.py), so a client that stops sending is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import StreamReader

from coordinator.api.client_idle import IdleWatch
from coordinator.errors import CoordinatorError


class BrokenBody(CoordinatorError):
    """The request body ended (or broke off) before the file part did."""


async def next_chunk(content: StreamReader, idle: IdleWatch | None) -> bytes:
    """The next piece of the body as it came off the network (b"" at its end), the wait
    marked as one for the client."""
    # readchunk, not readany: readany joins (copies) whatever is buffered
    while True:
        if idle is not None:
            idle.begin()
        try:
            chunk, end_of_http_chunk = await content.readchunk()
        finally:
            if idle is not None:
                idle.end()
        if chunk or not end_of_http_chunk:
            return chunk


class RawBodyStream:
    """A request body that is the file itself (a tus PATCH), read as a file part is."""

    def __init__(self, content: StreamReader, idle: IdleWatch | None = None) -> None:
        self.content = content
        self.idle = idle

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        while chunk := await next_chunk(self.content, self.idle):
            yield chunk


class FilePartStream:
    """The bytes of a file part whose headers have just been read from ``content``."""

    def __init__(self, content: StreamReader, boundary: str, idle: IdleWatch | None = None) -> None:
        self.content = content
        self.idle = idle
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        # Set once the part has ended: did the form go on with more parts after the file?
        self.more_parts: bool | None = None

    async def _next(self) -> bytes:
        chunk = await next_chunk(self.content, self.idle)
        if not chunk:
            raise BrokenBody("the request body ended inside the file")
        return chunk

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        delim = self.delimiter
        keep = len(delim) - 1  # a delimiter may start in the last `keep` bytes of a chunk
        held = b""
        while True:
            chunk = await self._next()
            if held and len(chunk) < keep:
                # Too short to settle whether `held` starts a delimiter: look at both together.
                chunk, held = held + chunk, b""
            if held:
                seam = held + chunk[:keep]
                at = seam.find(delim)
                if at != -1:
                    if at:
                        yield held[:at]
                    await self._after(chunk[at + len(delim) - len(held) :])
                    return
                yield held
                held = b""
            at = chunk.find(delim)
            if at != -1:
                if at:
                    yield memoryview(chunk)[:at]
                await self._after(chunk[at + len(delim) :])
                return
            if len(chunk) > keep:
                yield memoryview(chunk)[: len(chunk) - keep]
                held = chunk[len(chunk) - keep :]
            else:
                held = chunk

    async def _after(self, rest: bytes) -> None:
        """What follows the delimiter: "--" ends the form, CRLF starts another part."""
        while len(rest) < 2:
            rest += await self._next()
        if rest[:2] == b"--":
            self.more_parts = False
        elif rest[:2] == b"\r\n":
            self.more_parts = True
        else:
            raise BrokenBody("malformed multipart boundary after the file")

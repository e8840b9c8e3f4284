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


class FilePartStream:
    """The bytes of a file part whose headers have just been read from ``content``."""

    def __init__(self, content: StreamReader, boundary: str, idle: IdleWatch | None = None) -> None:
        self.content = content
        self.idle = idle
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        # Set once the part has ended: did the form go on with more parts after the file?
        self.more_parts: bool | None = None

    async def _next(self) -> bytes:
        # readchunk, not readany: readany joins (copies) whatever is buffered
        while True:
            if self.idle is not None:
                self.idle.begin()
            try:
                chunk, end_of_http_chunk = await self.content.readchunk()
            finally:
                if self.idle is not None:
                    self.idle.end()
            if chunk:
                return chunk
            if not end_of_http_chunk:
                raise BrokenBody("the request body ended inside the file")

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

"""A file as the body part of a multipart upload, read from disk as it is sent.

aiohttp's own file payloads do not say how far the sending got; this one calls
``on_bytes`` after each read. Reads run in a thread (a slow disk must not stall the
event loop) and are 1 MiB each: the writer waits for the socket to drain between
them, so at most a few MiB of the file are ever in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

READ_SIZE = 1 << 20


class FilePayload(Payload):
    def __init__(self, path: Path, on_bytes: Callable[[int], None]) -> None:
        super().__init__(path, content_type="application/octet-stream", filename=path.name)
        self._path = path
        self._size = path.stat().st_size
        self._on_bytes = on_bytes

    async def write(self, writer: AbstractStreamWriter) -> None:
        loop = asyncio.get_running_loop()
        with open(self._path, "rb") as f:
            while chunk := await loop.run_in_executor(None, f.read, READ_SIZE):
                await writer.write(chunk)
                self._on_bytes(len(chunk))

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        await self.write(writer)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file being uploaded is not read into memory")

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        raise TypeError("a file being uploaded is not read into memory")

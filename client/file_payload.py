"""A file as the body part of a multipart upload, read from disk as it is sent.

aiohttp's own file payloads do not say how far the sending got; this one calls
``on_bytes`` after each read. Reads run in a thread (a slow disk must not stall the
event loop) and are 1 MiB each: the writer waits for the socket to drain between
them, so at most a few MiB of the file are ever in memory.

The coordinator must take each MiB within ``stall`` seconds and answer within
``answer_seconds(size)`` of the last (``deadline``, shared/turn_deadline.py): aiohttp's
own read timeout also runs while a body is being sent, so it cannot tell a coordinator
that stopped reading from one that is busy taking a large file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from shared.turn_deadline import TurnDeadline

READ_SIZE = 1 << 20


class FilePayload(Payload):
    def __init__(
        self,
        path: Path,
        on_bytes: Callable[[int], None],
        deadline: TurnDeadline,
        stall: float,
        answer_seconds: Callable[[int], float],
        offset: int = 0,
        content_type: str = "application/octet-stream",
    ) -> None:
        """``offset``: the bytes before it are not sent (a resumed upload's)."""
        super().__init__(path, content_type=content_type, filename=path.name)
        self._path = path
        self._offset = offset
        self._size = path.stat().st_size - offset
        self._on_bytes = on_bytes
        self._deadline = deadline
        self._stall = stall
        self._answer_seconds = answer_seconds

    async def write(self, writer: AbstractStreamWriter) -> None:
        loop = asyncio.get_running_loop()
        sent = 0
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            while chunk := await loop.run_in_executor(None, f.read, READ_SIZE):
                self._deadline.theirs(
                    self._stall, f"the coordinator took no data for {self._stall:g} s (after {sent} bytes)"
                )
                await writer.write(chunk)
                self._deadline.ours()
                sent += len(chunk)
                self._on_bytes(len(chunk))
        seconds = self._answer_seconds(sent)
        why = f"the coordinator did not answer within {seconds:g} s of the last byte"
        self._deadline.theirs(seconds, why)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        await self.write(writer)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file being uploaded is not read into memory")

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        raise TypeError("a file being uploaded is not read into memory")

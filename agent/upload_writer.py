"""Writing a streamed body to a staging file while hashing it (sha256).

Work is handed to one worker thread in batches of a few MiB so that the event
loop keeps receiving while the previous batch is written and hashed (hashlib
and the writes release the GIL). The file is written around the page cache
where the filesystem allows it (shared/direct_write.py).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import StreamReader

from agent.errors import AgentFault
from shared.direct_write import SequentialWriter, open_for_writing

BATCH = 4 << 20


class UploadTooLarge(AgentFault):
    pass


class UploadDiskFull(AgentFault):
    pass


class HashingWriter:
    """Appends to ``path`` (created exclusively) and keeps the sha256 of what was written
    (and its sha512, ``with_sha512``: what a download may be checked against)."""

    def __init__(self, path: Path, limit: int, with_sha512: bool = False) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.hasher = hashlib.sha256()
        self.sha512 = hashlib.sha512() if with_sha512 else None
        self.fd, direct = open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC)
        self.out = SequentialWriter(self.fd, 0, direct)
        self._pending: asyncio.Future[None] | None = None
        self._batch: list[bytes] = []
        self._batched = 0

    def _flush_sync(self, batch: list[bytes], last: bool = False) -> None:
        try:
            self.out.write(batch)
            if last:
                self.out.flush()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise UploadDiskFull(f"staging disk is full after {self.size} bytes") from None
            raise
        for chunk in batch:
            self.hasher.update(chunk)
            if self.sha512 is not None:
                self.sha512.update(chunk)

    async def _flush(self, last: bool = False) -> None:
        """Wait for the batch being written; hand over the next one (``last``: and the tail)."""
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._batch or last:
            batch, self._batch, self._batched = self._batch, [], 0
            self._pending = asyncio.get_running_loop().run_in_executor(None, self._flush_sync, batch, last)

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLarge(f"more than {self.limit} bytes")
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= BATCH:
            await self._flush()

    async def finish(self) -> str:
        """Flush, fsync and return the hex sha256."""
        await self._flush(last=True)
        await self._flush()  # (waits for the last one)
        await asyncio.to_thread(os.fsync, self.fd)
        return self.hasher.hexdigest()

    async def drain_quietly(self) -> None:
        if self._pending is not None:
            try:
                await self._pending
            except Exception:  # already failing; the caller reports the first error
                pass
            self._pending = None

    def close(self) -> None:
        self.out.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def receive_to_file(stream: AsyncIterator[bytes], path: Path, limit: int) -> tuple[int, str]:
    """Write everything ``stream`` yields to ``path``; returns (size, sha256).

    On any failure (client gone, too large, disk full) the partial file is removed.
    """
    writer = HashingWriter(path, limit)
    try:
        async for chunk in stream:
            await writer.write(chunk)
        digest = await writer.finish()
        return writer.size, digest
    except BaseException:
        await writer.drain_quietly()
        writer.close()
        path.unlink(missing_ok=True)
        raise
    finally:
        writer.close()


def sha256_of(path: Path) -> str:
    """The sha256 of a file written before (one not hashed as it came: an export, a
    resumable upload's)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BATCH):
            digest.update(block)
    return digest.hexdigest()


async def body_pieces(content: StreamReader) -> AsyncIterator[bytes]:
    """A request body as the network delivered it, piece by piece.

    aiohttp's ``iter_any()``/``readany()`` join every piece buffered so far into one
    bytes object: a copy of the data on the event loop whenever the reader falls behind.
    ``readchunk()`` hands over the buffered pieces one at a time, uncopied.
    """
    while True:
        data, end_of_http_chunk = await content.readchunk()
        if not data and not end_of_http_chunk:
            return
        if data:
            yield data

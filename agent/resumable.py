"""A resumable upload's partial file on this agent (the coordinator's tus uploads).

The file is ``upload-<id>-resumable`` in staging: a name this agent makes from the upload
id, never from anything a client said. Its size is the upload's offset, the one truth
every PATCH is checked against: what a PATCH cut off wrote stays (synced to disk), so the
client goes on from there. One PATCH at a time per upload (a lock; a second one waits a
little for the first to end, then is refused). The whole file's sha256 is taken once the
last byte is in, and the file is then validated and staged as an upload's is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

from agent.errors import AgentFault
from agent.staging import Staging
from agent.upload_writer import BATCH, UploadDiskFull, UploadTooLarge, sha256_of


class UploadBusy(AgentFault):
    """Another PATCH of the upload still holds its file."""


class ResumableFiles:
    def __init__(self, staging: Staging, turn_wait: float = 10.0) -> None:
        self.staging = staging
        self.turn_wait = turn_wait
        self._locks: dict[int, asyncio.Lock] = {}

    def path(self, upload_id: int) -> Path:
        return self.staging.resumable_path(upload_id)

    def held(self, upload_id: int) -> int | None:
        """The bytes stored so far (the upload's offset); None: no such upload here."""
        try:
            return self.path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def create(self, upload_id: int) -> int:
        """The (empty) partial file, made unless it is there already; its size."""
        fd = os.open(self.path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self.staging.fsync_dir()
        return self.held(upload_id) or 0

    @contextlib.asynccontextmanager
    async def turn(self, upload_id: int) -> AsyncIterator[None]:
        """The upload's file, for this request alone; UploadBusy if another does not let go
        within ``turn_wait`` seconds (a PATCH cut off a moment ago is still syncing)."""
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), self.turn_wait)
        except TimeoutError:
            raise UploadBusy(f"another PATCH of upload {upload_id} is still running") from None
        try:
            yield
        finally:
            lock.release()
            if not lock.locked():
                self._locks.pop(upload_id, None)

    async def append(self, upload_id: int, offset: int, length: int, pieces: AsyncIterator[bytes]) -> int:
        """Write ``pieces`` at ``offset`` (the file's size: the caller checked, holding the
        turn); returns the new offset. What arrived before the body broke off is kept and
        synced; more than ``length`` in all is UploadTooLarge, and nothing of this body stays."""
        fd = os.open(self.path(upload_id), os.O_WRONLY | os.O_CLOEXEC)
        at = offset
        batch: list[bytes] = []
        batched = 0
        try:
            async for piece in pieces:
                if at + batched + len(piece) > length:
                    batch = []
                    await asyncio.to_thread(os.ftruncate, fd, offset)
                    raise UploadTooLarge(f"more than the upload's length of {length} bytes")
                batch.append(piece)
                batched += len(piece)
                if batched >= BATCH:
                    at = await asyncio.to_thread(_write_at, fd, batch, at)
                    batch, batched = [], 0
        finally:
            try:
                if batch:  # what came before the end, or before the body broke off
                    at = await asyncio.to_thread(_write_at, fd, batch, at)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
        return at

    async def sha256(self, upload_id: int) -> str:
        return await asyncio.to_thread(sha256_of, self.path(upload_id))


def _write_at(fd: int, batch: list[bytes], at: int) -> int:
    try:
        for piece in batch:
            view = memoryview(piece)
            while view:
                done = os.pwrite(fd, view, at)
                view, at = view[done:], at + done
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UploadDiskFull(f"staging disk is full after {at} bytes") from None
        raise
    return at

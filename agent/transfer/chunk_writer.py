"""Where a received chunk is checked and written.

One thread checks each chunk's digest and writes it at its offset; a second thread keeps
the running sha256 of the whole file. With both jobs in one thread, the copy into the
page cache plus sha256 capped a stream at ~365 MB/s on this machine's cores. A chunk
counts as verified once its digest matched and it is written: forwarders may relay it
from then on. The sha256 follows a few chunks behind and is compared once the last
chunk is in; once it has read a chunk, the chunk's buffer goes back to the frame reader.

Chunks are written strictly in order from the stream's start offset, so the partial file
is always a verified prefix of the image: its length is how far a receive got. Whole
chunks go around the page cache where the filesystem allows it (shared/direct_write.py).

A stream carries only the chunks the target lacks (shared/manifest.py). The others are
made here, in order, before the next chunk that came over the network: a zero chunk is
a hole (the file is extended), a chunk the node already holds is read from its seed and
must match its manifest digest like any other. A network chunk is checked twice: its
xxh3 (transit) and its digest against the manifest (BLAKE3: shared/manifest.py).

The seconds each thread spends per phase (``phases``: seed read, seed check, seed write,
net check, net write, image sha256, ...) go into the log line of a completed copy
(receive.py), which is how the rollout benchmark's time was taken apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentFault
from shared.direct_write import SequentialWriter, open_for_writing
from shared.frames import CHUNK, Frame, chunk_digest
from shared.manifest import Manifest, Source, chunk_hash

ZEROS = memoryview(bytes(CHUNK))

# Chunks written while the next ones arrive, and chunks waiting for the sha256 thread
# (memory: about this many x CHUNK each).
IN_FLIGHT = 4
HASH_BACKLOG = 4
HASH_READ = 8 << 20


class ChunkCorrupt(AgentFault):
    pass


class CopyDiskFull(AgentFault):
    pass


class SeedCorrupt(AgentFault):
    """A chunk read from a seed does not match the manifest: it must come over the network."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class ChunkPlan:
    """Where each chunk of one stream's image comes from (receive.py makes it)."""

    manifest: Manifest
    sources: list[Source]
    # Chunk i as a seed holds it (called in the write thread), None if it cannot be read.
    seed_chunk: Callable[[int], bytes | None] = lambda _index: None


class RunningHash:
    """The sha256 of [0, upto) of one receive's file; kept between its streams."""

    def __init__(self) -> None:
        self.hasher: Any = hashlib.sha256()
        self.upto = 0

    def update(self, pieces: list[memoryview], end: int) -> None:
        for piece in pieces:
            self.hasher.update(piece)
        self.upto = end

    def catch_up(self, fd: int, end: int) -> None:
        """Make it cover exactly [0, end) (after an agent restart: hash what is on disk)."""
        if self.upto == end:
            return
        self.hasher, self.upto = hashlib.sha256(), 0
        while self.upto < end:
            data = os.pread(fd, min(HASH_READ, end - self.upto), self.upto)
            if not data:
                raise OSError(f"the partial file is shorter than its {end} verified bytes")
            self.hasher.update(data)
            self.upto += len(data)

    def hexdigest(self) -> str:
        return str(self.hasher.hexdigest())


class ChunkWriter:
    """One stream's chunks into one file, from ``start`` on."""

    def __init__(
        self,
        fd: int,
        path: Path,
        start: int,
        running: RunningHash,
        landed: Callable[[Frame, int], None],
        local: ChunkPlan | None = None,
        reused: Callable[[int], None] = lambda _n: None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.fd = fd  # for reading back and syncing
        # Writes go through a descriptor of their own: O_DIRECT would make reads need
        # aligned buffers too.
        write_fd, direct = open_for_writing(path, os.O_WRONLY | os.O_CLOEXEC)
        self._out = SequentialWriter(write_fd, start, direct)
        self.written = start  # the write thread's own view (verified bytes on disk)
        self.running = running
        self.landed = landed  # called on the event loop with each chunk and the new verified end
        self.local = local
        self.reused = reused  # called on the event loop with the bytes of each chunk made here
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="chunk-write")
        self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="chunk-sha256")
        self._writes: deque[asyncio.Future[None]] = deque()
        self._hashes: deque[concurrent.futures.Future[None]] = deque()  # write thread only
        # Seconds per phase (each written by one thread), for the log line at the end.
        self.phases: defaultdict[str, float] = defaultdict(float)

    async def prepare(self) -> None:
        """The running sha256 must cover exactly what is already verified on disk."""
        await self.loop.run_in_executor(self._hash_pool, self.running.catch_up, self.fd, self.written)

    async def write(self, frame: Frame) -> None:
        """Queue a chunk; waits while too many are in flight, and raises the first failure."""
        self._writes.append(self.loop.run_in_executor(self._write_pool, self._check_and_write, frame))
        while len(self._writes) >= IN_FLIGHT or (self._writes and self._writes[0].done()):
            await self._writes.popleft()

    async def fill_rest(self, end: int) -> None:
        """After the last frame: make the chunks up to ``end`` that are not the network's."""
        self._writes.append(self.loop.run_in_executor(self._write_pool, self._fill_to, end))
        await self.drain()

    async def drain(self) -> None:
        """Every queued chunk written and hashed (or the first failure raised)."""
        while self._writes:
            await self._writes.popleft()
        await self.loop.run_in_executor(self._hash_pool, _nothing)  # one thread: all before are done

    async def finish(self, sha256: str) -> bool:
        """After drain(): the data on disk, and is it the image the coordinator signed for?"""
        return await self.loop.run_in_executor(self._write_pool, self._sync_and_compare, sha256)

    async def close(self) -> None:
        for fut in self._writes:
            fut.cancel()
        # The threads use the descriptor: they must be done before the caller closes it.
        await self.loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._write_pool.shutdown(wait=True)
        self._hash_pool.shutdown(wait=True)
        self._out.close()
        # close() may come twice (a failure path, then the stream's end): the descriptor
        # number could belong to someone else by then.
        if self._out.fd >= 0:
            os.close(self._out.fd)
            self._out.fd = -1

    # -- the write thread -------------------------------------------------------------

    def _check_and_write(self, frame: Frame) -> None:
        self._fill_to(frame.offset)
        if frame.offset != self.written:
            return  # an earlier chunk of this stream failed: nothing after it may be kept
        started = time.perf_counter()
        if not frame.intact():
            raise ChunkCorrupt(f"chunk at offset {frame.offset} failed its digest check")
        if self.local is not None:
            manifest = self.local.manifest
            if chunk_hash(*frame.pieces) != manifest.chunks[manifest.index(frame.offset)]:
                raise ChunkCorrupt(f"chunk at offset {frame.offset} does not match its manifest digest")
        checked = time.perf_counter()
        self._write(frame)
        self.phases["net check"] += checked - started
        self.phases["net write"] += time.perf_counter() - checked

    def _write(self, frame: Frame) -> None:
        try:
            self._out.write(frame.pieces, frame.aligned)
            self._out.flush()  # the chunk is in the file before anyone relies on it
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise CopyDiskFull(f"staging disk is full after {frame.offset} bytes") from None
            raise
        self._landed(frame, self._out.offset)

    def _landed(self, frame: Frame, offset: int) -> None:
        self.written = offset
        while len(self._hashes) >= HASH_BACKLOG:
            self._hashes.popleft().result()
        self.loop.call_soon_threadsafe(self.landed, frame, offset)
        self._hashes.append(self._hash_pool.submit(self._hash, frame, offset))

    def _fill_to(self, end: int) -> None:
        """Make the chunks before ``end`` that are not the network's, in order, until the
        next one the network brings (zeros: a hole; seeds: read and checked)."""
        local = self.local
        if local is None:
            return
        manifest = local.manifest
        while self.written < end:
            index = manifest.index(self.written)
            source = local.sources[index]
            offset, length = manifest.span(index)
            if offset != self.written or source is Source.NET:
                return  # (the network's: the caller checks that it is the frame at hand)
            if source is Source.ZERO:
                self._out.flush()
                os.ftruncate(self.fd, offset + length)  # a hole: no byte written, none stored
                self._out.offset = offset + length
                # (No transit digest: a relay never sends a zero chunk on.)
                self._landed(Frame(offset, b"", [ZEROS[:length]]), offset + length)
            else:
                started = time.perf_counter()
                data = local.seed_chunk(index)
                read = time.perf_counter()
                if data is None or chunk_hash(data) != manifest.chunks[index]:
                    raise SeedCorrupt(
                        index, f"the chunk at {offset} this node held does not match the manifest"
                    )
                frame = Frame(offset, chunk_digest(data), [memoryview(data)])
                checked = time.perf_counter()
                self._write(frame)
                self.phases["seed read"] += read - started
                self.phases["seed check"] += checked - read
                self.phases["seed write"] += time.perf_counter() - checked
            self.loop.call_soon_threadsafe(self.reused, length)

    # -- the sha256 thread ------------------------------------------------------------

    def _hash(self, frame: Frame, end: int) -> None:
        started = time.perf_counter()
        self.running.update(frame.pieces, end)
        self.phases["image sha256"] += time.perf_counter() - started
        self.loop.call_soon_threadsafe(frame.release)  # (after landed: callbacks run in order)

    def _sync_and_compare(self, sha256: str) -> bool:
        started = time.perf_counter()
        os.fdatasync(self.fd)
        self.phases["fdatasync"] += time.perf_counter() - started
        return self.running.hexdigest() == sha256

    def phase_summary(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(self.phases.items()))


def _nothing() -> None:
    return None

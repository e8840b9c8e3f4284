"""Sending an image to peers: one stream per hop, resumed, routed around a dead hop.

A transfer delivers one image to an ordered list of hops (target agents). It streams to
the first hop and hands it the rest of the list; that hop relays what it has verified to
the next one (a pipeline, as HDFS writes blocks), so the image leaves the source once
however many nodes get it. A stream that breaks is resumed from the bytes the hop has
verified; a hop that cannot be reached or keeps failing is routed around (the transfer
goes on with the next hop), and the coordinator gives the skipped node a new attempt.

What moves is the image as the guest sees it, on the manifest's 4 MiB grid
(shared/manifest.py): each hop says, when its session opens, which chunks it lacks, and
only those are streamed. Zeros and chunks the hop holds already never cross the link.

Where the hop accepts a codec (zstd, shared/wire_codec.py), the stream is chunked (its
length is not known before: frame_reader.py) and each chunk is compressed, in a worker
thread a step behind the read-ahead, while that pays: WirePolicy compares the
compressor's rate with the link's, as measured in this stream. A relay compresses again
for its own next hop (its chunks are verified, uncompressed, in memory or in its file;
the next link may be fast, so the choice is that link's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import aiohttp
from msgspec.structs import replace

from agent.client import AgentClient, AgentError, AgentUnreachable, AgentUntrusted
from agent.errors import AgentFault
from agent.metrics import AgentMetrics
from agent.transfer.errors import TransferRefused
from agent.transfer.guest_image import GuestImage, mapped_chunk, read_chunk
from agent.transfer.guest_view import GuestLayout
from agent.transfer.policy import PeerPolicy
from shared.error_slugs import ErrorSlug
from shared.frames import CHUNK, DIGEST_SIZE, chunk_digest, encode_header
from shared.manifest import chunk_count, needed_indexes
from shared.messages.transfers import Hop
from shared.wire_codec import WirePolicy, compress_timed, frame_pays

log = logging.getLogger(__name__)

# Retries of one hop before it is routed around (connection refused, busy, broken stream).
HOP_ATTEMPTS = 6
BACKOFF_START = 0.5
BACKOFF_MAX = 8.0
# Chunks read ahead of the network (memory: this many x CHUNK).
READ_AHEAD = 2
# How long a compressed stream waits for its first frame to cross before it chooses for
# the second one without the link's rate (plain): a link that slow is stalled, and the
# stream's own deadlines end it.
LINK_WAIT_SECONDS = 30.0
# What the TLS layer is handed at a time. It encrypts a write whole into a memory buffer
# before any of it goes to the socket; in pieces that stay in the CPU's cache the copies
# in and out of that buffer cost less: the sender's memmove in a 2 GiB sync over loopback
# (perf) 0.32 CPU s/GiB with 256 KiB pieces, 0.52-0.60 with whole 4 MiB chunks.
WRITE_PIECE = 256 << 10
# Refusals that another try at the same hop cannot fix.
FINAL_ERRORS = {
    ErrorSlug.STALE_TICKET,
    ErrorSlug.SESSION_SUPERSEDED,
    ErrorSlug.NO_SPACE,
    ErrorSlug.CHECKSUM,
    ErrorSlug.RECEIVE_FAILED,
}
TICKET_ERRORS = {ErrorSlug.BAD_TICKET, ErrorSlug.TICKET_USED}


class ImageSource(Protocol):
    @property
    def size(self) -> int:
        """The guest view's bytes."""
        ...

    @property
    def manifest_raw(self) -> bytes:
        """The chunk manifest (what the hop's ticket signs)."""
        ...

    def layout(self) -> GuestLayout:
        """Where the guest view's bytes are in the readable file."""
        ...

    def readable_path(self) -> Path: ...

    def staged_name(self) -> str:
        """The staged image (or copy) it is, which eviction must leave alone while it is read."""
        ...

    def whole(self) -> bool:
        """The readable file holds the whole image and will not change."""
        ...

    async def wait_until(self, end: int) -> None: ...

    def cached(self, offset: int, length: int) -> tuple[bytes, list[memoryview]] | None: ...


class StagedImage:
    """A complete image in staging: everything is there from the start."""

    def __init__(self, staged: Path, image: GuestImage, manifest_raw: bytes) -> None:
        self.staged = staged
        self.image = image
        self._manifest_raw = manifest_raw

    @property
    def size(self) -> int:
        return self.image.size

    @property
    def manifest_raw(self) -> bytes:
        return self._manifest_raw

    def layout(self) -> GuestLayout:
        return self.image.layout

    def readable_path(self) -> Path:
        return self.image.path  # (the staged file, or its raw conversion beside it)

    def staged_name(self) -> str:
        return self.staged.name

    def whole(self) -> bool:
        return True

    async def wait_until(self, end: int) -> None:
        return None

    def cached(self, offset: int, length: int) -> tuple[bytes, list[memoryview]] | None:
        return None


Pieces = list[bytes | memoryview] | list[memoryview]
# (offset, length, digest, payload pieces), an error to raise, or None at the end.
ReadQueue = asyncio.Queue[tuple[int, int, bytes, Pieces] | BaseException | None]
# The same as (frame header, payload pieces), each compressed where that paid.
PackedQueue = asyncio.Queue[tuple[bytes, Pieces] | BaseException | None]


class HopFailed(AgentFault):
    pass


class RateLimit:
    """A token bucket shared by every outbound stream of this agent (0 = no cap)."""

    def __init__(self, bytes_per_second: int) -> None:
        self.rate = bytes_per_second
        self._allowance = 0.0
        self._at = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._allowance = min(self._allowance + (now - self._at) * self.rate, float(self.rate))
        self._at = now
        self._allowance -= n
        if self._allowance < 0:
            await asyncio.sleep(-self._allowance / self.rate)


class Sender:
    """This agent's outbound side: peer connections, running transfers, the rate cap."""

    def __init__(
        self,
        fresh_ticket: Callable[[int, str, int], Awaitable[str]],
        rate_limit: RateLimit,
        peer_tls: ssl.SSLContext,
        policy: PeerPolicy,
        codecs: tuple[str, ...] = (),
        node: str = "",
        metrics: AgentMetrics | None = None,
    ) -> None:
        """``node``: this agent's node, named to the peers it sends to (their metrics)."""
        self.node = node
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self._http: aiohttp.ClientSession | None = None
        self.fresh_ticket = fresh_ticket
        self.rate_limit = rate_limit
        self.peer_tls = peer_tls  # checks peers' certificates: the cluster CA (tls_ca_file)
        self.policy = policy  # whether image bytes may go in the clear (data_plane)
        self.codecs = codecs  # payload compressions offered to hops and accepted from peers
        self.transfers: dict[str, asyncio.Task[None]] = {}
        self._sources: dict[str, ImageSource] = {}

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on first use, inside the running loop
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.peer_tls),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._http

    @property
    def outbound(self) -> int:
        return sum(1 for t in self.transfers.values() if not t.done())

    def start(self, transfer_id: str, source: ImageSource, hops: list[Hop]) -> asyncio.Task[None]:
        task = asyncio.create_task(
            Transfer(self, transfer_id, source, hops).run(), name=f"send-{transfer_id}"
        )
        self.transfers[transfer_id] = task
        self._sources[transfer_id] = source
        task.add_done_callback(lambda _: self._forget(transfer_id))
        return task

    def _forget(self, transfer_id: str) -> None:
        self.transfers.pop(transfer_id, None)
        self._sources.pop(transfer_id, None)

    def reading(self) -> set[str]:
        """The names of the files running transfers send from (staged images, relayed copies)."""
        return {s.staged_name() for s in self._sources.values()}

    async def close(self) -> None:
        tasks = list(self.transfers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


class Transfer:
    def __init__(self, sender: Sender, transfer_id: str, source: ImageSource, hops: list[Hop]) -> None:
        self.sender = sender
        self.id = transfer_id
        self.source = source
        self.hops = hops

    async def run(self) -> None:
        hops = list(self.hops)
        while hops:
            hop, rest = hops[0], hops[1:]
            try:
                await self._deliver(hop, rest)
                return  # the hop relays the rest
            except HopFailed as exc:
                if rest:
                    log.warning(
                        "transfer %s: giving up on %s (task %s): %s; routing around it to %s",
                        self.id,
                        hop.node,
                        hop.task_id,
                        exc,
                        rest[0].node,
                    )
                else:
                    log.warning(
                        "transfer %s: giving up on %s (task %s): %s", self.id, hop.node, hop.task_id, exc
                    )
                # A ticket of our own for the next hop: asking for it tells the coordinator who
                # sends to that node now (its source_node), and the planned one may be spent.
                hops = [replace(rest[0], ticket=""), *rest[1:]] if rest else []

    async def _deliver(self, hop: Hop, rest: list[Hop]) -> None:
        client = AgentClient(self.sender.http, hop.url)  # a peer: the ticket is its authority
        ticket: str | None = hop.ticket or None  # none yet: ask the coordinator
        delay = BACKOFF_START
        for attempt in range(1, HOP_ATTEMPTS + 1):
            try:
                if ticket is None:
                    ticket = await self.sender.fresh_ticket(hop.task_id, hop.task_uid, hop.epoch)
                opened = await client.open_session(
                    hop.task_id,
                    ticket,
                    rest,
                    self.source.manifest_raw,
                    hop.seeds,
                    self.sender.codecs,
                    self.sender.node,
                )
                ticket = None  # spent: every session needs a new one
                offset = opened.offset
                if offset >= self.source.size:
                    return
                chunks = _needed(opened.needed, offset, self.source.size)
                # In the clear only where this agent's policy allows it too.
                plain_url = opened.plain_url if self.sender.policy.insecure else None
                codec = opened.codec if opened.codec in self.sender.codecs else None
                log.info(
                    "transfer %s: streaming to %s (task %s) from byte %d of %d: %d chunk(s), %d bytes%s%s",
                    self.id,
                    hop.node,
                    hop.task_id,
                    offset,
                    self.source.size,
                    len(chunks),
                    sum(n for _o, n in chunks),
                    f" in the clear ({plain_url}; data_plane insecure)" if plain_url else "",
                    f", {codec} where it pays" if codec else "",
                )
                await self._stream(client, hop, opened.session, chunks, plain_url, codec is not None)
                return
            except AgentError as exc:
                if exc.error in FINAL_ERRORS:
                    raise HopFailed(f"{exc.status} {exc.error}: {exc.message}") from None
                if exc.error in TICKET_ERRORS:
                    ticket = None
                if exc.error == ErrorSlug.CORRUPT_CHUNK:
                    log.warning("transfer %s: %s reports %s; resending", self.id, hop.node, exc.message)
                    continue  # resume at once from what the hop verified
                reason = f"{exc.status} {exc.error}: {exc.message}"
            except AgentUntrusted as exc:  # another try meets the same certificate
                raise HopFailed(str(exc)) from None
            except AgentUnreachable as exc:
                reason = str(exc)
            except TransferRefused as exc:  # the ticket for this hop cannot be had any more
                raise HopFailed(exc.message) from None
            if attempt == HOP_ATTEMPTS:
                raise HopFailed(f"{HOP_ATTEMPTS} tries failed; last: {reason}")
            log.info(
                "transfer %s: %s (task %s): %s; retrying in %.1fs",
                self.id,
                hop.node,
                hop.task_id,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _stream(
        self,
        client: AgentClient,
        hop: Hop,
        session: str,
        chunks: list[tuple[int, int]],
        plain_url: str | None,
        compressed: bool = False,
    ) -> None:
        """One stream of the ``chunks`` (offset, length) the hop needs, read ahead of the
        network in a worker thread (none: the hop makes the rest itself, the empty stream
        tells it to); ``compressed``: in compressed batches while that pays.

        The read-ahead ends with the stream, whatever ended it, not whenever the frames'
        generator is finalized: aiohttp does not close a body it stopped writing (the hop
        refused the stream, the transfer was canceled).
        """
        queue: ReadQueue = asyncio.Queue(READ_AHEAD)
        reader = asyncio.create_task(self._read(chunks, queue))
        try:
            rest = chunks
            if compressed and chunks:  # (chunked: its length is not known before)
                policy = WirePolicy(self.sender.rate_limit.rate)
                frames = self._compressed_frames(queue, policy, hop.node)
                await client.stream(hop.task_id, session, frames, None, plain_url)
                rest = chunks[policy.chunks :] if policy.gave_up else []
            if rest or not chunks:
                await client.stream(
                    hop.task_id, session, self._frames(queue, hop.node), _stream_length(rest), plain_url
                )
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)  # (its errors went to the stream)

    async def _frames(self, queue: ReadQueue, peer: str) -> AsyncIterator[bytes | memoryview]:
        """The frames the read-ahead queued, in pieces for the TLS layer, at the agent's rate."""
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            offset, length, digest, pieces = item
            wire = sum(len(p) for p in pieces)
            await self.sender.rate_limit.take(wire)
            yield encode_header(offset, length, digest)
            for view in _write_pieces(pieces):
                yield view
            self.sender.metrics.sent_to(peer, wire)

    async def _compressed_frames(
        self, queue: ReadQueue, policy: WirePolicy, peer: str
    ) -> AsyncIterator[bytes | memoryview]:
        """The frames of a chunked stream, each compressed (a step behind the read-ahead, in a
        worker thread) while the policy says that pays, at the agent's rate. It ends early
        where the policy gives up on compression: the rest goes as a plain stream.

        The time spent handing pieces to aiohttp (which waits while the socket is full) and in
        the rate cap is the link's; the time spent waiting for the compressor is not.
        """
        packed: PackedQueue = asyncio.Queue(READ_AHEAD)
        crossed = asyncio.Event()  # the first frame crossed: the link's rate is measured
        compressor = asyncio.create_task(self._compress(queue, packed, policy, crossed))
        try:
            while True:
                item = await packed.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                header, pieces = item
                started = time.monotonic()
                wire = sum(len(p) for p in pieces)
                await self.sender.rate_limit.take(wire)
                yield header
                for view in _write_pieces(pieces):
                    yield view
                policy.sent(len(header) + wire, time.monotonic() - started)
                crossed.set()
                self.sender.metrics.sent_to(peer, wire)
            log.info("transfer %s: %s", self.id, policy.summary())
        finally:
            compressor.cancel()
            await asyncio.gather(compressor, return_exceptions=True)

    async def _compress(
        self,
        queue: ReadQueue,
        packed: PackedQueue,
        policy: WirePolicy,
        crossed: asyncio.Event,
    ) -> None:
        """Compress or not, chunk by chunk. Until the first frame has crossed, the link's
        rate is unknown and the policy would choose plain: the chunks that arrive meanwhile
        wait for it instead (a relay gets its chunks faster than its first one crosses a
        capped link: choosing plain then sent a 32 MiB copy almost uncompressed)."""
        try:
            while True:
                if policy.give_up():
                    await packed.put(None)  # (the read-ahead goes on, into the plain stream)
                    return
                item = await queue.get()
                if item is None or isinstance(item, BaseException):
                    await packed.put(item)
                    return
                offset, length, digest, pieces = item
                if policy.link_unknown():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(crossed.wait(), LINK_WAIT_SECONDS)
                if not policy.compress_next():
                    await packed.put((encode_header(offset, length, digest), pieces))
                    continue
                out, seconds = await asyncio.to_thread(compress_timed, *pieces)
                policy.compressed(length, len(out), seconds)
                if frame_pays(length, len(out)):
                    wire: list[bytes | memoryview] = [out]
                    await packed.put((encode_header(offset, length, digest, len(out)), wire))
                else:
                    await packed.put((encode_header(offset, length, digest), pieces))
        except Exception as exc:  # handed to the stream, which fails with it
            await packed.put(exc)

    async def _read(self, chunks: list[tuple[int, int]], queue: ReadQueue) -> None:
        fd = -1
        mapped: memoryview | None = None
        layout = self.source.layout()
        from_memory = read_back = 0  # a relay's chunks: still in memory, or read from its file
        try:
            for offset, length in chunks:
                await self.source.wait_until(offset + length)
                # A relay has the chunk it just verified in memory: no read, no second digest.
                cached = self.source.cached(offset, length)
                if cached is not None:
                    digest, pieces = cached
                    await queue.put((offset, length, digest, pieces))
                    from_memory += 1
                    continue
                if fd < 0:
                    fd = _open(self.source)
                    if self.source.whole():
                        mapped = _map(fd, layout.file_end())
                if mapped is not None:
                    # The socket copies straight from the page cache: no read into a buffer.
                    pieces = mapped_chunk(mapped, layout, offset, length)
                    digest = await asyncio.to_thread(chunk_digest, *pieces)
                    await queue.put((offset, length, digest, pieces))
                    continue
                payload, digest = await asyncio.to_thread(_read_chunk, fd, layout, offset, length)
                await queue.put((offset, length, digest, payload))
                read_back += 1
            if from_memory or read_back:
                log.info(
                    "transfer %s: relayed %d chunk(s) from memory, %d read back from the file",
                    self.id,
                    from_memory,
                    read_back,
                )
            await queue.put(None)
        except Exception as exc:  # handed to the stream, which fails with it
            # (Not BaseException: a GeneratorExit, when the coroutine is closed away from its
            # loop, would await the queue there and fail as "bound to a different event loop".)
            await queue.put(exc)
        finally:
            if fd >= 0:
                os.close(fd)


def _write_pieces(pieces: Pieces) -> Iterator[memoryview]:
    """A payload in the pieces handed to aiohttp (at most WRITE_PIECE each)."""
    for piece in pieces:
        view = memoryview(piece)
        for at in range(0, len(view), WRITE_PIECE):
            yield view[at : at + WRITE_PIECE]


def _open(source: ImageSource) -> int:
    # A relay's copy is renamed from .part when it completes; the open descriptor survives that.
    try:
        return os.open(source.readable_path(), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(source.readable_path(), os.O_RDONLY | os.O_CLOEXEC)


def _needed(bitmap: bytes, start: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the chunks a hop said it needs, from ``start`` on."""
    chunks = []
    for index in needed_indexes(bitmap, chunk_count(size)):
        offset = index * CHUNK
        if offset >= start:
            chunks.append((offset, min(CHUNK, size - offset)))
    return chunks


def _stream_length(chunks: list[tuple[int, int]]) -> int:
    """Exact byte length of the stream of these chunks (headers included)."""
    placeholder = bytes(DIGEST_SIZE)
    return sum(len(encode_header(o, n, placeholder)) + n for o, n in chunks)


def _map(fd: int, size: int) -> memoryview | None:
    """The file's first ``size`` bytes (where the guest view's data is) mapped read-only, or
    None where it cannot be (then it is read).

    The map closes itself once the last piece handed to the network is released.
    """
    if size == 0:
        return None
    try:
        if os.fstat(fd).st_size < size:
            return None  # not the image the transfer is about: the reads will say so
        mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    return memoryview(mapped)


def _read_chunk(
    fd: int, layout: GuestLayout, offset: int, length: int
) -> tuple[list[bytes | memoryview], bytes]:
    pieces = read_chunk(fd, layout, offset, length)
    return pieces, chunk_digest(*pieces)

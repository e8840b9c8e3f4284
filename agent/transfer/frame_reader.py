"""Where a sync stream's bytes come off the socket: straight into chunk buffers.

The body of ``PUT /v1/receives/{task}/data`` is not read through aiohttp. Through it,
every payload byte is copied three times before it reaches the disk: uvloop copies each
socket read into a new bytes object, aiohttp's HTTP parser copies the body out of that
again, and an O_DIRECT write needs one more copy into an aligned buffer. Instead, once
the handler runs, ``StreamBody`` hands the connection to ``FrameReader``, an asyncio
BufferedProtocol: the kernel receives each frame's payload into a page-aligned buffer of
the reader's own, which the chunk writer checks, writes (O_DIRECT, as it is) and hashes.
With `benchmarks sync-loopback` (benchmarks/README.md, 2026-11-26) the receiver's event
loop went from 0.72 user + 0.79 system CPU seconds per GiB to 0.15 + 0.33, and the whole
receiver from 4.23 to 1.92.

Agents speak TLS: the transport is then the event loop's TLS transport (uvloop's
sslproto), which decrypts each record straight into the buffer ``get_buffer`` hands it,
so TLS adds the decryption and the one copy of the ciphertext into the TLS layer's own
buffer, not aiohttp's copies.

aiohttp's parser never sees the body, so the connection cannot carry another request:
the response closes it (one connection per stream; a stream is an image, or what is
left of one).

A compressed stream's length is not known when it starts: it comes chunked (HTTP/1.1
chunked transfer coding), with ``Expect: 100-continue``, and the reader takes the
connection over in the route's expect handler, before the 100 Continue asks for the body,
so aiohttp's parser sees none of it. ``ChunkedBody`` then strips the chunk framing: the
data of each HTTP chunk goes where a plain body's bytes go (the same buffers and bounds),
the few bytes of each size line are read one at a time (the sender's chunks are 256 KiB
at most or a compressed frame: a few reads per chunk).

Memory: at most BUFFERS x CHUNK per stream. When every buffer is taken (the disk or the
sha256 falls behind), reading pauses and TCP pushes back on the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import socket
from collections import deque
from collections.abc import AsyncIterator

from aiohttp import web

from agent.errors import AgentFault
from agent.transfer.errors import TransferRefused
from shared.error_slugs import ErrorSlug
from shared.frames import CHUNK, MAX_HEADER, PREFIX, Frame, FrameError, decode_header, header_length

BUFFERS = 8
# SO_RCVLOWAT: the event loop is woken once this much is waiting, not for every few
# dozen KiB (each wake-up is Python work); lowered near the end of the body.
BATCH = 256 << 10
# Over TLS the socket's bytes are records, and the TLS layer holds some of what was read
# (a record not complete yet; up to its read-ahead limit while reading is paused), which
# the body's remaining count includes: a low-water mark set from that count could wait
# for bytes that never come. Over the last TLS_SLACK bytes of a body it is not raised.
TLS_SLACK = 1 << 20
# A wait for the network this long lowers the low-water mark to one byte: a sender that
# stops mid-body (its transfer canceled) closes TLS with a close_notify of a few dozen
# bytes, under the mark, and waits for ours before it closes the socket (30 s, asyncio's
# TLS shutdown timeout): without this, the stream ended 30 s after its sender did.
QUIET_SECONDS = 0.5
# After a refused stream, how long the rest of the body is read and dropped (the answer
# already sent) so that the sender, still sending, gets to read the answer before the
# connection closes: closed with unread bytes, it is reset, and a reset can destroy the
# answer on its way (as aiohttp's lingering close knows).
LINGER_SECONDS = 10.0

_PREFIX, _HEADER, _PAYLOAD = range(3)
# Where a chunked body's framing is: a size line, the CRLF after a chunk's data, trailers.
_SIZE_LINE, _DATA_END, _TRAILERS = range(3)
MAX_LINE = 64
UNKNOWN = 1 << 62  # a chunked body's remaining bytes, until its last chunk is read


class ChunkedBody:
    """The framing of a chunked body, read one byte at a time between the chunks' data."""

    def __init__(self) -> None:
        self.left = 0  # data bytes of the current chunk not read yet
        self.state = _SIZE_LINE
        self.byte = memoryview(bytearray(1))
        self._line = bytearray()

    def framing_byte(self) -> bool:
        """Take the byte read into ``byte``; True once the body's end (its empty line) came."""
        self._line += self.byte
        if len(self._line) > MAX_LINE:
            raise FrameError("a chunked body's framing line is too long")
        if self.byte[0] != 0x0A:
            return False
        line, self._line = bytes(self._line), bytearray()
        if self.state == _DATA_END:
            if line != b"\r\n":
                raise FrameError("a chunk's data is not followed by CRLF")
            self.state = _SIZE_LINE
        elif self.state == _SIZE_LINE:
            text = line.split(b";", 1)[0].strip()
            if not text or len(text) > 16 or text.strip(b"0123456789abcdefABCDEF"):
                raise FrameError(f"bad chunk size line {line[:20]!r}")
            self.left = int(text, 16)
            self.state = _DATA_END if self.left else _TRAILERS
        elif line == b"\r\n":  # (trailer fields before it are ignored)
            return True
        return False


class StreamTruncated(FrameError, AgentFault):
    """The body ended inside a frame."""


class FrameReader(asyncio.BufferedProtocol):
    """The frames of a body of ``length`` bytes, from what the transport reads into it.

    Frames come out of ``frames()`` in order; each holds one of the reader's buffers until
    ``Frame.release()``. ``feed()`` takes bytes that were read before the reader took over.
    """

    def __init__(self, length: int | None, max_payload: int = CHUNK, buffers: int = BUFFERS) -> None:
        """``length``: the body's Content-Length; None: a chunked body."""
        self.chunked = ChunkedBody() if length is None else None
        self.remaining = UNKNOWN if length is None else length  # body bytes not read yet
        self.max_payload = max_payload
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.BaseProtocol | None = None  # the protocol that had the connection before
        self._head = memoryview(bytearray(PREFIX.size + MAX_HEADER))
        self._state = _PREFIX
        self._at = 0  # where in _head the part being read starts
        self._want = PREFIX.size
        self._filled = 0
        # (offset, digest, uncompressed length if compressed) of the payload being read
        self._frame: tuple[int, bytes, int | None] | None = None
        self._buffer: mmap.mmap | None = None
        self._free: list[mmap.mmap] = []
        self._unmade = buffers
        self._ready: deque[Frame] = deque()
        self._error: BaseException | None = None
        self.done = self.remaining == 0  # no more frames will come (the body ended, broke off or is bad)
        self._lost = False  # the connection is gone
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self._scratch: memoryview | None = None  # set while the rest is read and dropped
        self._sock: socket.socket | None = None
        self._lowat = 1
        self._slack = 0  # TLS_SLACK over TLS

    def attach(self, transport: asyncio.Transport, inner: asyncio.BaseProtocol) -> None:
        self.transport, self.inner = transport, inner
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            self._sock = sock
        if transport.get_extra_info("ssl_object") is not None:
            self._slack = TLS_SLACK
        if self.done:
            self._pause()  # an empty body: nothing to read
        self._set_lowat()

    # -- what the transport calls -----------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._scratch is not None:
            return self._scratch[: min(len(self._scratch), self.remaining)]
        chunked = self.chunked
        if chunked is not None and chunked.left == 0:
            return chunked.byte  # the chunk framing
        room = min(self._want - self._filled, self.remaining if chunked is None else chunked.left)
        if self._state == _PAYLOAD:
            if self._buffer is None:
                raise RuntimeError("read while waiting for a free buffer")
            return memoryview(self._buffer)[self._filled : self._filled + room]
        start = self._at + self._filled
        return self._head[start : start + room]

    def buffer_updated(self, nbytes: int) -> None:
        chunked = self.chunked
        if chunked is not None and self._scratch is None:
            if chunked.left == 0:
                try:
                    ended = chunked.framing_byte()
                except FrameError as exc:
                    self._finish(exc)
                    return
                if ended:
                    self.remaining = 0
                    self._ended()
                self._set_lowat()
                return
            chunked.left -= nbytes
        else:
            self.remaining -= nbytes
        if self._scratch is not None:  # dropping the rest of the body
            if self.remaining == 0:
                self._pause()
                self._wake()
        else:
            self._filled += nbytes
            try:
                if self._filled == self._want:
                    self._advance()
            except FrameError as exc:
                self._finish(exc)
                return
            if self.remaining == 0:
                self._ended()
        self._set_lowat()

    def _ended(self) -> None:
        between_frames = self._state == _PREFIX and self._filled == 0
        self._finish(None if between_frames else StreamTruncated("the stream ended inside a frame"))

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost says what that means

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()
        if not self.done:
            self._finish(
                ConnectionResetError(
                    "the connection closed before the chunked body ended"
                    if self.chunked is not None
                    else f"the connection closed with {self.remaining} body bytes to come"
                )
            )
        if self.inner is not None:
            self.inner.connection_lost(exc)  # aiohttp tidies up its side of the connection

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- the state machine ----------------------------------------------------------------

    def _advance(self) -> None:
        if self._state == _PREFIX:
            self._state, self._at = _HEADER, PREFIX.size
            self._want, self._filled = header_length(self._head[: PREFIX.size]), 0
        elif self._state == _HEADER:
            offset, length, digest, wire = decode_header(
                self._head[self._at : self._at + self._want], self.max_payload
            )
            self._state, self._frame = _PAYLOAD, (offset, digest, None if wire is None else length)
            self._want, self._filled = length if wire is None else wire, 0
            self._buffer = self._take_buffer()
            if self._buffer is None:
                self._pause()  # until a frame is released
        else:
            assert self._frame is not None and self._buffer is not None
            buffer, (offset, digest, inflates_to) = self._buffer, self._frame
            view = memoryview(buffer)[: self._want]
            frame = Frame(offset, digest, [view], True, lambda: self._give_back(buffer), inflates_to)
            self._ready.append(frame)
            self._state, self._at, self._want, self._filled = _PREFIX, 0, PREFIX.size, 0
            self._buffer, self._frame = None, None
            self._wake()

    def _take_buffer(self) -> mmap.mmap | None:
        if self._free:
            return self._free.pop()
        if self._unmade:
            self._unmade -= 1
            return mmap.mmap(-1, self.max_payload)  # page-aligned, as O_DIRECT wants
        return None

    def _give_back(self, buffer: mmap.mmap) -> None:
        self._free.append(buffer)
        if self._state == _PAYLOAD and self._buffer is None and self._scratch is None and not self.done:
            self._buffer = self._free.pop()
            self._resume()

    def _finish(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.done, self._error = True, error
        self._pause()
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _pause(self) -> None:
        if self.transport is not None and not self._paused and not self.transport.is_closing():
            self.transport.pause_reading()
            self._paused = True

    def _resume(self) -> None:
        if self.transport is not None and self._paused and not self._lost:
            self.transport.resume_reading()
            self._paused = False

    def _set_lowat(self) -> None:
        # Dropping the rest: every byte wakes the reader, or a sender's closing words (a TLS
        # close_notify, a few dozen bytes) would wait under the mark until the linger ends.
        coming = self.remaining if self.chunked is None else self.chunked.left  # (0: framing)
        wanted = 1 if self._scratch is not None else max(1, min(BATCH, coming - self._slack))
        if self._sock is None or wanted == self._lowat:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
        except (OSError, ValueError):
            return  # the connection is going away: reading says how
        self._lowat = wanted

    # -- what the receiving side calls ----------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        """Bytes of the body that were read before this reader took over."""
        view = memoryview(data)
        while view and not self.done:
            room = self.get_buffer(len(view))
            n = min(len(room), len(view))
            room[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    async def frames(self) -> AsyncIterator[Frame]:
        """Each frame as its payload is complete; raises what ended the body early."""
        while True:
            while self._ready:
                yield self._ready.popleft()
            if self.done:
                if self._error is not None:
                    raise self._error
                return
            loop = asyncio.get_running_loop()
            self._wakeup = loop.create_future()
            quiet = loop.call_later(QUIET_SECONDS, self._quiet)
            try:
                await self._wakeup
            finally:
                quiet.cancel()

    def _quiet(self) -> None:
        """No bytes for a while: wake for any (buffer_updated raises the mark again)."""
        if self._sock is not None and self._lowat > 1:
            with contextlib.suppress(OSError, ValueError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                self._lowat = 1

    def hand_back(self) -> asyncio.BaseProtocol | None:
        """Stop reading; the protocol that had the connection before (to give it back to)."""
        self._pause()
        return self.inner

    async def drop_rest(self) -> None:
        """Read the rest of the body without keeping it (frames not taken yet are dropped)."""
        while self._ready:
            self._ready.popleft().release()
        if self.remaining == 0 or self._lost:
            return
        self._scratch = memoryview(bytearray(BATCH))
        self._buffer = None
        self._set_lowat()
        self._resume()
        while self.remaining > 0 and not self._lost:
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup


class StreamBody:
    """A request's frames, read by a FrameReader that takes the connection over on first use."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.reader: FrameReader | None = None

    async def frames(self) -> AsyncIterator[Frame]:
        reader = self._take_over()
        async for frame in reader.frames():
            yield frame

    def take_over_chunked(self) -> None:
        """In the expect handler, before the 100 Continue: a chunked body, none of it read yet."""
        if self.request.content.read_nowait(-1) or self.request.content.is_eof():
            raise TransferRefused(400, ErrorSlug.BAD_FRAME, "the chunked body came before the 100 Continue")
        self._take_over(chunked=True)

    def _take_over(self, chunked: bool = False) -> FrameReader:
        if self.reader is not None:
            return self.reader  # (taken in the expect handler)
        request = self.request
        length = request.content_length
        if length is None and not chunked:
            raise TransferRefused(
                411,
                ErrorSlug.LENGTH_REQUIRED,
                "a stream is a body with a Content-Length, or chunked after Expect: 100-continue",
            )
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection is gone")
        reader = self.reader = FrameReader(None if chunked else length)
        reader.attach(transport, request.protocol)  # type: ignore[arg-type]
        transport.set_protocol(reader)
        # What aiohttp read before the handler ran (its first reads of the body).
        reader.feed(request.content.read_nowait(-1))
        if not reader.done and not transport.is_reading():
            transport.resume_reading()  # aiohttp may have paused it (its own buffer was full)
        return reader

    async def finish(self, response: web.StreamResponse) -> None:
        """After the stream: send ``response`` at once, then read and drop what is left of the
        body (for a while), give the connection back to aiohttp, and have it closed.

        The answer goes first: a sender learns that a chunk was refused (bad digest, full
        disk) while it is still sending, and stops. Sent only after the rest of the body,
        a refusal reached a sender 10 s late (the linger's limit), mid-image.
        """
        reader = self.reader
        if reader is None:
            return  # never taken over: aiohttp reads (or drops) the body itself
        response.force_close()
        with contextlib.suppress(ConnectionError):  # the sender is gone: nothing to tell it
            await response.prepare(self.request)
            await response.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                await reader.drop_rest()
        self._give_back(reader)
        self.request.content.feed_eof()  # aiohttp must not wait for a body it never saw

    def abandon(self) -> None:
        """The stream broke off unexpectedly: close the connection (its body is half read)."""
        if self.reader is None:
            return
        transport = self._give_back(self.reader)
        if transport is not None:
            transport.close()

    def _give_back(self, reader: FrameReader) -> asyncio.Transport | None:
        """Stop the reader and return the connection to aiohttp; the transport, if still open."""
        inner = reader.hand_back()
        transport = self.request.transport
        if transport is None or transport.is_closing():
            return None
        if inner is not None:
            transport.set_protocol(inner)
        return transport

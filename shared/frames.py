"""Wire format of a node-to-node image stream: msgpack-framed chunks with digests.

A stream carries one byte range of an image as a sequence of frames::

    [4-byte big-endian header length][msgpack header][payload]

The header is the map ``{"o": offset, "n": payload length, "d": digest}`` where the
digest is the 8-byte xxh3-64 of the payload. A compressed frame (shared/wire_codec.py,
negotiated per session) adds ``"z"``: the length of the compressed payload that follows,
at most ``n``; ``n`` and the digest stay those of the uncompressed payload. Only the
small header is msgpack: wrapping the payload itself in msgpack copies it, which costs
about a third of the throughput (calibration). xxh3 catches corruption in transit almost
for free; the whole file's sha256, checked at the end, is what proves the copy is the uploaded image.

Frames lie on a fixed grid (``start``, ``start + CHUNK``, ...), so the length of a whole
plain stream is known before it is sent (a Content-Length body, no chunked encoding); a
compressed stream is sent in batches, each a body whose frames are compressed before it
starts (agent/transfer/send.py). The receiving agent reads frames off the socket in
agent/transfer/frame_reader.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import msgpack
import xxhash

from shared.errors import PvesphereError

CHUNK = 4 << 20  # calibration: 1 MiB and 16 MiB frames are both slower
DIGEST_SIZE = 8
MAX_HEADER = 64
PREFIX = struct.Struct(">I")


class FrameError(PvesphereError, ValueError):
    """The byte stream is not a valid sequence of frames."""


def chunk_digest(*pieces: bytes | memoryview) -> bytes:
    h = xxhash.xxh3_64()
    for piece in pieces:
        h.update(piece)
    return h.digest()


def encode_header(offset: int, length: int, digest: bytes, wire: int | None = None) -> bytes:
    """``wire``: the compressed payload's length, for a compressed frame."""
    fields = {"o": offset, "n": length, "d": digest}
    if wire is not None:
        fields["z"] = wire
    header = msgpack.packb(fields)
    return PREFIX.pack(len(header)) + header


def frame_ranges(start: int, end: int, chunk: int = CHUNK) -> Iterator[tuple[int, int]]:
    """(offset, length) of every frame of the range [start, end)."""
    for offset in range(start, end, chunk):
        yield offset, min(chunk, end - offset)


def stream_length(start: int, end: int, chunk: int = CHUNK) -> int:
    """Exact byte length of the stream of [start, end) (headers included)."""
    placeholder = bytes(DIGEST_SIZE)
    return sum(len(encode_header(o, n, placeholder)) + n for o, n in frame_ranges(start, end, chunk))


def decode_header(raw: bytes | memoryview, max_payload: int = CHUNK) -> tuple[int, int, bytes, int | None]:
    """(offset, payload length, digest, compressed length or None) of a frame's msgpack
    header; FrameError if it is not one."""
    try:
        header = msgpack.unpackb(raw)
        offset, length, digest = header["o"], header["n"], header["d"]
        wire = header.get("z")
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.ExtraData) as exc:
        raise FrameError(f"bad frame header: {exc}") from None
    if not (isinstance(offset, int) and isinstance(length, int) and isinstance(digest, bytes)):
        raise FrameError("bad frame header: wrong field types")
    if offset < 0 or not 0 < length <= max_payload or len(digest) != DIGEST_SIZE:
        raise FrameError(f"bad frame header: offset {offset}, length {length}")
    # Never more on the wire than the payload it stands for: the reader's buffers hold it.
    if wire is not None and (not isinstance(wire, int) or not 0 < wire <= length):
        raise FrameError(f"bad frame header: compressed length {wire!r} for {length} bytes")
    return offset, length, digest, wire


def header_length(prefix: bytes | bytearray | memoryview) -> int:
    """The length the 4-byte prefix announces for the header that follows it."""
    (length,) = PREFIX.unpack(prefix)
    if not 0 < length <= MAX_HEADER:
        raise FrameError(f"frame header length {length} is out of range")
    return int(length)


@dataclass
class Frame:
    """One received chunk: where it goes, its digest, and its payload (views, not copies).

    ``aligned``: the payload is one page-aligned buffer (it can be written with O_DIRECT as
    it is). ``on_release``: called once the payload's memory may be reused.
    """

    offset: int
    digest: bytes
    pieces: list[memoryview]
    aligned: bool = False
    on_release: Callable[[], None] | None = None
    # A compressed frame: the payload's uncompressed length (``pieces`` are compressed).
    inflates_to: int | None = None

    @property
    def length(self) -> int:
        return sum(len(p) for p in self.pieces)

    def intact(self) -> bool:
        return chunk_digest(*self.pieces) == self.digest

    def release(self) -> None:
        """Done with the payload (the views must not be used after this)."""
        if self.on_release is not None:
            callback, self.on_release = self.on_release, None
            callback()

    def inflated(self) -> Frame:
        """The frame uncompressed (in a worker thread: zstd releases the GIL); this one is
        released. FrameError if the payload is not the zstd of ``inflates_to`` bytes."""
        if self.inflates_to is None:
            return self
        from shared.wire_codec import decompress  # (it imports this module)

        try:
            payload = decompress(
                b"".join(self.pieces) if len(self.pieces) > 1 else self.pieces[0], self.inflates_to
            )
        finally:
            self.release()
        return Frame(self.offset, self.digest, [memoryview(payload)])

    def detached(self) -> Frame:
        """A copy that owns its payload (to keep after this frame's buffer is reused)."""
        return Frame(self.offset, self.digest, [memoryview(b"".join(self.pieces))])

"""Optional compression of frame payloads between agents (zstd), and when it pays.

Negotiated per session: the sender offers the codecs it has (``SessionRequest.codecs``),
the receiver answers the one it takes (``SessionOpened.codec``) or none; an agent that
knows neither field ignores it and the stream is plain. A compressed frame announces its
wire length in its header (shared/frames.py); its digest stays the uncompressed payload's,
so every check downstream (xxh3 in transit, the manifest's sha256, the image's sha256)
is unchanged.

Off where it does not pay (``worth_compressing``, ``frame_pays``): zstd level 1 on this
machine makes about 300 MB/s of /usr's text and binaries on one core (2.7x; level 3:
190 MB/s, 3.1x) and sees random data through at 1.4 GB/s, while loopback carries about
1.5 GB/s: compression only wins while the link, not the CPU, is the bottleneck.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

import zstandard

from shared.frames import FrameError

ZSTD = "zstd"
CODECS: tuple[str, ...] = (ZSTD,)
# Level 1: on the 2-core test bed, level 3 (190 MB/s, 3.1x on /usr's text and binaries)
# fell behind a 1 Gbit/s link while the receiver shared the cores; level 1 makes 300 MB/s
# at 2.7x.
LEVEL = 1
# A compressed frame must save at least this share of its payload, or it goes plain (the
# receiver's decompression is not free either).
MIN_SAVING = 0.05
# Compress the next batch only if the image crosses at least this much faster with it.
MIN_GAIN = 1.1
# A compressor this many times faster than the link costs the stream nothing: compression
# stays on through a stretch that does not compress (random, already compressed data) for
# the compressible ones after it (an OS image mixes both).
HEADROOM = 8.0
# Chunks sent before the stream may give up on compression: enough for the link's rate to
# show (socket buffers of a few MiB take the first ones at once).
GIVE_UP_AFTER = 8

_local = threading.local()


def choose(offered: list[str], accepted: tuple[str, ...] = CODECS) -> str | None:
    """The receiver's pick among the codecs a sender offers (None: a plain stream)."""
    return next((c for c in offered if c in accepted), None)


def compress(*pieces: bytes | memoryview) -> bytes:
    """The zstd frame of the pieces (content size in its header); call in a worker thread."""
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
    if len(pieces) == 1:
        return bytes(cctx.compress(pieces[0]))
    return bytes(cctx.compress(b"".join(pieces)))


def compress_timed(*pieces: bytes | memoryview) -> tuple[bytes, float]:
    """``compress``, and the seconds it took inside its worker thread: not the wait for a
    free worker (the default executor also runs the reads, digests and writes of every
    stream of the agent), which under load made a 300 MB/s compressor look slower than a
    16 MiB/s link and turned compression off for the rest of the stream."""
    started = time.perf_counter()
    out = compress(*pieces)
    return out, time.perf_counter() - started


def decompress(data: bytes | memoryview, length: int) -> bytes:
    """The ``length`` bytes a compressed payload stands for; FrameError for anything else.

    Bounded: a frame that says it holds more (or does not say) is refused before anything
    is allocated, and the output may not exceed ``length`` (a zstd bomb from a hostile peer
    is a bad frame, not a memory blow-up).
    """
    try:
        announced = zstandard.frame_content_size(data)
        if announced != length:
            raise FrameError(f"compressed frame holds {announced} bytes, the header says {length}")
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=length, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise FrameError(f"bad compressed frame: {exc}") from None
    if len(out) != length:
        raise FrameError(f"compressed frame gave {len(out)} bytes, the header says {length}")
    return out


def frame_pays(raw: int, compressed: int) -> bool:
    """Send this chunk compressed? Only if it came out clearly smaller."""
    return compressed <= raw * (1 - MIN_SAVING)


@dataclass(frozen=True)
class Measured:
    """What a sender saw of a stream so far: ``raw`` image bytes went through the compressor
    in ``compress_seconds`` (inside its worker thread) and came out as ``packed`` bytes; the
    link took ``sent`` bytes (every frame, compressed or not) in ``send_seconds``."""

    raw: int = 0
    packed: int = 0
    compress_seconds: float = 0.0
    sent: int = 0
    send_seconds: float = 0.0


def worth_compressing(m: Measured, link_cap: float = 0.0) -> bool:
    """Compress the next chunk? Yes while the image crosses clearly faster so than plain,
    or the compressor is so far ahead of the link that it costs nothing; yes before
    anything is measured (to measure the compressor), no while the link is not measured.

    Plain, the image crosses at the link's rate; compressed, at the slower of the
    compressor and the link's rate times the ratio. The link's rate is the time the
    stream waited to hand bytes on (the receiver's decompression and disk included).
    ``link_cap``: a configured send rate (bytes/s), which bounds the link when lower.
    """
    if m.raw <= 0 or m.packed <= 0:
        return True
    if m.sent <= 0 or m.send_seconds <= 0:
        return False  # the compressor's rate is known, the link's not yet: plain meanwhile
    link = m.sent / m.send_seconds
    if link_cap > 0:
        link = min(link, link_cap)
    ratio = m.raw / m.packed
    compressor = m.raw / m.compress_seconds if m.compress_seconds > 0 else float("inf")
    return min(compressor, link * ratio) >= MIN_GAIN * link or compressor >= HEADROOM * link


class WirePolicy:
    """One stream's measurements and its chunk-by-chunk choice; after GIVE_UP_AFTER chunks
    in which it does not pay, the stream's rest goes plain (a Content-Length body, the
    fastest path: on loopback the compressed stream costs its first chunks only)."""

    def __init__(self, link_cap: float = 0.0) -> None:
        self.link_cap = link_cap
        self.m = Measured()
        self.chunks = self.compressed_chunks = 0  # chunks decided on, and compressed
        self.gave_up = False

    def compress_next(self) -> bool:
        self.chunks += 1
        return worth_compressing(self.m, self.link_cap)

    def link_unknown(self) -> bool:
        """The compressor is measured but the link not yet: the next choice would be plain
        blindly (the stream waits for its first frame to cross instead: send.py)."""
        return self.m.raw > 0 and self.m.sent <= 0

    def give_up(self) -> bool:
        """End the compressed stream here (the rest plain)?"""
        if self.chunks >= GIVE_UP_AFTER and not worth_compressing(self.m, self.link_cap):
            self.gave_up = True
        return self.gave_up

    def compressed(self, raw: int, packed: int, seconds: float) -> None:
        m = self.m
        self.m = replace(
            m,
            raw=m.raw + raw,
            packed=m.packed + min(packed, raw),
            compress_seconds=m.compress_seconds + seconds,
        )
        self.compressed_chunks += 1

    def sent(self, wire: int, seconds: float) -> None:
        self.m = replace(self.m, sent=self.m.sent + wire, send_seconds=self.m.send_seconds + seconds)

    def summary(self) -> str:
        m = self.m
        ratio = m.raw / m.packed if m.packed else 1.0
        compressor = m.raw / m.compress_seconds / 1e6 if m.compress_seconds else 0.0
        link = m.sent / m.send_seconds / 1e6 if m.send_seconds else 0.0
        return (
            f"{self.compressed_chunks} of {self.chunks} chunk(s) through zstd ({ratio:.2f}x, "
            f"{compressor:.0f} MB/s), {m.sent} bytes on the wire (at {link:.0f} MB/s)"
            + ("; the rest plain" if self.gave_up else "")
        )

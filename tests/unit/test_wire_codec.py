"""Compression on the wire between agents: compressed frames read back as the bytes they
stand for, a hostile frame fails as a bad frame, and when the sender compresses."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import pytest
import zstandard

from agent.transfer.frame_reader import FrameReader, StreamTruncated
from shared.frames import CHUNK, Frame, FrameError, chunk_digest, decode_header, encode_header
from shared.messages.transfers import SessionOpened, SessionRequest
from shared.validation import Model
from shared.wire_codec import (
    GIVE_UP_AFTER,
    HEADROOM,
    Measured,
    WirePolicy,
    choose,
    compress,
    compress_timed,
    decompress,
    frame_pays,
    worth_compressing,
)
from tests.unit.test_frames import FakeTransport

TEXT = b"".join(b"line %d of a config file that repeats itself\n" % i for i in range(20_000))[:65536]


def read_frames(stream: bytes, max_payload: int = 65536) -> list[Frame]:
    reader = FrameReader(len(stream), max_payload=max_payload)
    reader.attach(FakeTransport(), None)  # type: ignore[arg-type]

    async def collect() -> list[Frame]:
        out = []
        reader.feed(stream)
        async for frame in reader.frames():
            out.append(frame.detached() if frame.inflates_to is None else frame)
        return out

    return asyncio.run(collect())


def test_a_compressed_frame_reads_back_as_its_payload_with_the_same_digest() -> None:
    packed = compress(TEXT)
    assert len(packed) < len(TEXT) // 4
    header = encode_header(65536, len(TEXT), chunk_digest(TEXT), len(packed))
    assert decode_header(header[4:]) == (65536, len(TEXT), chunk_digest(TEXT), len(packed))
    (frame,) = read_frames(header + packed)
    assert frame.inflates_to == len(TEXT) and frame.length == len(packed)  # as it came
    plain = frame.inflated()
    assert bytes(plain.pieces[0]) == TEXT and plain.intact() and plain.offset == 65536


def mixed(noise: bytes) -> bytes:
    """A plain frame of ``noise`` at 0, then TEXT compressed at 65536."""
    packed = compress(TEXT)
    return (
        encode_header(0, len(noise), chunk_digest(noise))
        + noise
        + encode_header(65536, len(TEXT), chunk_digest(TEXT), len(packed))
        + packed
    )


def test_plain_and_compressed_frames_mix_in_one_stream() -> None:
    noise = os.urandom(65536)
    first, second = read_frames(mixed(noise))
    assert first.inflates_to is None and bytes(first.pieces[0]) == noise
    assert bytes(second.inflated().pieces[0]) == TEXT
    # An uncompressed header is the one older agents send: no "z" in it.
    assert decode_header(encode_header(0, 10, bytes(8))[4:])[3] is None


def test_a_compressed_length_over_the_payload_is_a_bad_header() -> None:
    with pytest.raises(FrameError, match="compressed length"):
        decode_header(encode_header(0, 1000, bytes(8), 1001)[4:])
    with pytest.raises(FrameError, match="compressed length"):
        decode_header(encode_header(0, 1000, bytes(8), 0)[4:])


def test_a_zstd_bomb_fails_as_a_bad_frame_without_inflating() -> None:
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(256 << 20))  # 256 MiB of zeros
    assert len(bomb) < 65536
    with pytest.raises(FrameError, match="holds"):
        decompress(bomb, CHUNK)
    # Without a content size in its header, the output is still bounded by the chunk.
    sizeless = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bytes(256 << 20))
    with pytest.raises(FrameError):
        decompress(sizeless, CHUNK)
    # And a frame that stops short of what its header announced is bad too.
    with pytest.raises(FrameError):
        decompress(compress(TEXT)[:-8], len(TEXT))
    with pytest.raises(FrameError):
        decompress(b"not zstd at all", 100)


def test_a_bomb_in_a_stream_fails_when_inflated_and_gives_its_buffer_back() -> None:
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    stream = encode_header(0, 65536, chunk_digest(bytes(65536)), len(bomb)) + bomb
    (frame,) = read_frames(stream)
    released: list[bool] = []
    frame.on_release = lambda: released.append(True)
    with pytest.raises(FrameError):
        frame.inflated()
    assert released == [True]


def test_the_receiver_takes_the_first_codec_it_knows() -> None:
    assert choose(["lz4", "zstd"], ("zstd",)) == "zstd"
    assert choose(["zstd"], ()) is None  # compression refused: plain frames
    assert choose([], ("zstd",)) is None  # an older sender offers nothing


def test_a_chunk_goes_compressed_only_if_clearly_smaller() -> None:
    assert frame_pays(CHUNK, CHUNK // 3)
    assert not frame_pays(CHUNK, CHUNK - 1000)
    noise = os.urandom(1 << 20)
    assert not frame_pays(len(noise), len(compress(noise)))


MB = 1_000_000


def seen(raw_mb: float, ratio: float, compressor: float, link: float) -> Measured:
    """``raw_mb`` MB compressed ``ratio``:1 at ``compressor`` MB/s, sent at ``link`` MB/s."""
    packed = raw_mb / ratio
    return Measured(int(raw_mb * MB), int(packed * MB), raw_mb / compressor, int(packed * MB), packed / link)


@pytest.mark.parametrize(
    ("measured", "cap", "compress_next", "why"),
    [
        # 1 Gbit link, 3x compressible text, compressor 230 MB/s: 230 MB/s of image vs 125.
        (seen(32, 3, 230, 125), 0, True, "link-bound"),
        # Loopback at 1.5 GB/s: the compressor (230 MB/s) would be the bottleneck.
        (seen(32, 3, 230, 1500), 0, False, "cpu-bound"),
        # Random data on loopback: no saving, compressor not far enough ahead.
        (seen(32, 1, 1400, 1500), 0, False, "no saving"),
        # Random data on a 1 Gbit link: the compressor is 11x faster; stays on for later.
        (seen(32, 1, 1400, 125), 0, True, "headroom"),
        # A barely compressible stretch (1.05x) on a fast link: not worth it.
        (seen(32, 1.05, 500, 600), 0, False, "small gain"),
        # The link looked fast, but a configured cap of 50 MB/s is the real bottleneck.
        (seen(32, 3, 230, 1500), 50 * MB, True, "capped"),
        # Nothing compressed yet: try (to measure the compressor).
        (Measured(), 0, True, "nothing measured"),
        # The compressor measured, the link not yet (nothing waited for it): plain meanwhile.
        (Measured(4 * MB, MB, 0.02, 0, 0.0), 0, False, "link unknown"),
    ],
)
def test_compress_while_the_link_not_the_cpu_is_the_bottleneck(
    measured: Measured, cap: int, compress_next: bool, why: str
) -> None:
    assert worth_compressing(measured, cap) is compress_next, why


def test_headroom_is_what_keeps_an_incompressible_stretch_compressed() -> None:
    assert worth_compressing(seen(32, 1, HEADROOM * 100 * 1.01, 100))
    assert not worth_compressing(seen(32, 1, HEADROOM * 100 * 0.9, 100))


def test_a_stream_gives_up_on_compression_where_it_does_not_pay_and_not_before() -> None:
    fast = WirePolicy()
    assert fast.compress_next()  # the first chunk measures the compressor
    fast.compressed(4 * MB, int(1.3 * MB), 4 / 230)
    for _ in range(GIVE_UP_AFTER - 1):
        assert not fast.give_up()
        fast.compress_next()
        fast.sent(4 * MB, 4 / 1500)  # loopback
    assert fast.give_up() and fast.gave_up

    slow = WirePolicy()
    slow.compress_next()
    slow.compressed(4 * MB, int(1.3 * MB), 4 / 230)
    for _ in range(3 * GIVE_UP_AFTER):
        slow.sent(int(1.3 * MB), 1.3 / 125)  # 1 Gbit/s
        assert not slow.give_up()
        assert slow.compress_next()


def test_the_link_is_unknown_from_the_first_compressed_chunk_until_a_frame_crossed() -> None:
    policy = WirePolicy()
    assert not policy.link_unknown()  # nothing measured: the first chunk measures the compressor
    policy.compress_next()
    policy.compressed(4 * MB, int(1.3 * MB), 4 / 230)
    assert policy.link_unknown()  # choosing now would be plain, blindly: send.py waits
    assert not policy.compress_next()
    policy.sent(int(1.3 * MB), 1.3 / 16)  # a 16 MB/s link
    assert not policy.link_unknown() and policy.compress_next()


def test_the_compressors_time_leaves_out_the_wait_for_a_free_worker() -> None:
    """A worker busy for 0.5 s with something else (a read, a digest) is not the compressor's
    slowness: counted as such, a loaded agent turned compression off for a whole stream."""
    from concurrent.futures import ThreadPoolExecutor

    data = (b"def function(argument):\n    return argument\n" * 100_000)[: 4 * MB]
    with ThreadPoolExecutor(1) as pool:
        pool.submit(time.sleep, 0.5)
        waited = time.perf_counter()
        out, seconds = pool.submit(compress_timed, data).result()
        waited = time.perf_counter() - waited
    assert decompress(out, len(data)) == data
    assert waited >= 0.5 > seconds


def chunked(body: bytes, piece: int) -> bytes:
    """``body`` in HTTP/1.1 chunked coding, ``piece`` bytes a chunk (as aiohttp writes it)."""
    out = bytearray()
    for at in range(0, len(body), piece):
        part = body[at : at + piece]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


def read_cut(stream: bytes, cuts: int, seed: int) -> list[Frame]:
    """Frames of a chunked body fed in ``cuts`` random pieces."""
    import random

    reader = FrameReader(None, max_payload=65536)
    reader.attach(FakeTransport(), None)  # type: ignore[arg-type]
    rng = random.Random(seed)
    marks = sorted(rng.sample(range(1, len(stream)), cuts))

    async def collect() -> list[Frame]:
        out = []
        for a, b in zip([0, *marks], [*marks, len(stream)], strict=True):
            reader.feed(stream[a:b])
            while reader._ready:
                frame = reader._ready.popleft()
                out.append(frame.detached() if frame.inflates_to is None else frame.inflated())
                frame.release()
        async for frame in reader.frames():
            out.append(frame.detached() if frame.inflates_to is None else frame.inflated())
        return out

    return asyncio.run(collect())


@pytest.mark.parametrize("piece", [7, 1000, 65536])
def test_a_chunked_body_reads_back_as_its_frames_however_it_is_cut(piece: int) -> None:
    noise = os.urandom(50_000)
    body = mixed(noise)
    for seed in range(3):
        first, second = read_cut(chunked(body, piece), 40, seed)
        assert bytes(first.pieces[0]) == noise and bytes(second.pieces[0]) == TEXT
        assert first.intact() and second.intact()


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"zz\r\n" + bytes(10), "size line"),
        (b"4\r\n\x00\x00\x00\x14XY\r\n", "CRLF"),  # (a header's 4-byte prefix, then no CRLF)
        (b"f" * 80, "too long"),
    ],
)
def test_bad_chunk_framing_is_a_bad_frame(stream: bytes, error: str) -> None:
    reader = FrameReader(None)
    reader.attach(FakeTransport(), None)  # type: ignore[arg-type]
    reader.feed(stream)

    async def collect() -> None:
        async for _frame in reader.frames():
            pass

    with pytest.raises(FrameError, match=error):
        asyncio.run(collect())


def test_a_chunked_body_that_ends_inside_a_frame_is_truncated() -> None:
    body = encode_header(0, len(TEXT), chunk_digest(TEXT)) + TEXT[:1000]
    with pytest.raises(StreamTruncated):
        read_cut(chunked(body, 4096), 3, 0)


class OldSessionRequest(Model):
    """SessionRequest as an agent one minor version older knows it (no codecs)."""

    ticket: str
    manifest: bytes = b""


class OldSessionOpened(Model, omit_defaults=True):
    session: str
    offset: int
    size: int
    needed: bytes = b""


def test_an_agent_a_version_apart_ignores_the_codec_fields_and_streams_plain() -> None:
    offer = msgspec.json.encode(SessionRequest("ticket", codecs=["zstd"]))
    assert msgspec.json.decode(offer, type=OldSessionRequest).ticket == "ticket"  # older target
    answer = msgspec.json.encode(OldSessionOpened("s", 0, 100))
    assert msgspec.json.decode(answer, type=SessionOpened).codec is None  # older target's answer
    accepted = msgspec.json.encode(SessionOpened("s", 0, 100, codec="zstd"))
    assert msgspec.json.decode(accepted, type=OldSessionOpened).session == "s"  # older sender
    assert msgspec.json.decode(msgspec.json.encode(OldSessionRequest("t")), type=SessionRequest).codecs == []

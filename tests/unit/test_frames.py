"""The stream format: what a sender encodes, the receiving agent's frame reader gets back,
however the network cuts it (agent/transfer/frame_reader.py, driven without a socket)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from agent.transfer.frame_reader import FrameReader, StreamTruncated
from shared.frames import CHUNK, Frame, FrameError, chunk_digest, encode_header, frame_ranges, stream_length


def encode(data: bytes, start: int, chunk: int) -> bytes:
    out = bytearray()
    for offset, length in frame_ranges(start, len(data), chunk):
        payload = data[offset : offset + length]
        out += encode_header(offset, length, chunk_digest(payload)) + payload
    return bytes(out)


def read_all(reader: FrameReader) -> list[Frame]:
    async def collect() -> list[Frame]:
        return [frame async for frame in reader.frames()]

    return asyncio.run(collect())


class FakeTransport:
    """What the reader asks of a transport: pausing and resuming reads."""

    def __init__(self) -> None:
        self.reading = True
        self.pauses = 0

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True


@pytest.mark.parametrize("start", [0, 1000, 65536])
def test_any_cut_of_the_stream_reads_back_as_the_same_frames(start: int) -> None:
    data = os.urandom(300_000)
    stream = encode(data, start, chunk=65536)
    assert len(stream) == stream_length(start, len(data), 65536)
    reader = FrameReader(len(stream), max_payload=65536)
    rng = random.Random(start)
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 3, 7, 100, 4096, 70000])
        reader.feed(stream[pos : pos + step])
        pos += step
    frames = read_all(reader)
    assert [f.offset for f in frames] == [o for o, _ in frame_ranges(start, len(data), 65536)]
    assert all(f.intact() for f in frames)
    assert all(f.aligned for f in frames)  # each payload sits at the start of a buffer of its own
    assert b"".join(b"".join(f.pieces) for f in frames) == data[start:]


def test_a_flipped_payload_byte_fails_the_digest() -> None:
    data = os.urandom(10_000)
    stream = bytearray(encode(data, 0, chunk=4096))
    stream[-5] ^= 0x40
    reader = FrameReader(len(stream), max_payload=4096)
    reader.feed(bytes(stream))
    assert [f.intact() for f in read_all(reader)] == [True, True, False]


def test_a_body_that_ends_inside_a_frame_is_truncated_after_the_whole_frames() -> None:
    data = os.urandom(5000)
    stream = encode(data, 0, 4096)[:-10]
    reader = FrameReader(len(stream), max_payload=4096)
    reader.feed(stream)
    got: list[int] = []

    async def collect() -> None:
        async for frame in reader.frames():
            got.append(frame.offset)

    with pytest.raises(StreamTruncated):
        asyncio.run(collect())
    assert got == [0]  # the whole frame before the cut still counts


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x10\x00",  # a header longer than any real one
        b"\x00\x00\x00\x00",  # an empty header
    ],
)
def test_nonsense_header_lengths_are_refused(raw: bytes) -> None:
    reader = FrameReader(100)
    reader.feed(raw)
    with pytest.raises(FrameError, match="header length"):
        read_all(reader)


def test_payloads_larger_than_the_chunk_size_are_refused() -> None:
    raw = encode_header(0, CHUNK + 1, bytes(8))
    reader = FrameReader(len(raw) + CHUNK + 1)
    reader.feed(raw)
    with pytest.raises(FrameError, match="length"):
        read_all(reader)


def test_a_reader_out_of_buffers_stops_reading_until_a_frame_is_released() -> None:
    data = os.urandom(5 * 4096)
    stream = encode(data, 0, 4096)
    reader = FrameReader(len(stream), max_payload=4096, buffers=2)
    transport = FakeTransport()
    reader.attach(transport, asyncio.Protocol())  # type: ignore[arg-type]
    first_two = sum(
        len(encode_header(o, n, bytes(8))) + n for o, n in list(frame_ranges(0, len(data), 4096))[:2]
    )
    header = len(encode_header(8192, 4096, bytes(8)))
    reader.feed(stream[: first_two + header])
    # Two frames hold both buffers and the third frame's header is in: no room for its payload.
    assert not transport.reading and transport.pauses == 1
    assert len(reader._ready) == 2
    first = reader._ready.popleft()
    kept = bytes(first.pieces[0])
    first.release()
    assert transport.reading  # the released buffer takes the next payload
    reader.feed(stream[first_two + header : first_two + header + 4096])
    assert len(reader._ready) == 2
    received = [kept]
    while reader._ready:
        frame = reader._ready.popleft()
        received.append(bytes(frame.pieces[0]))
        frame.release()
    reader.feed(stream[first_two + header + 4096 :])
    received += [bytes(f.pieces[0]) for f in read_all(reader)]
    assert b"".join(received) == data


def test_stream_length_of_a_big_image_matches_the_frames() -> None:
    size = 50 * CHUNK + 123
    expected = sum(len(encode_header(o, n, bytes(8))) + n for o, n in frame_ranges(0, size))
    assert stream_length(0, size) == expected

"""The stream format: what a sender encodes, a receiver parses back, however the network cuts it."""

from __future__ import annotations

import os
import random

import pytest

from shared.frames import (
    CHUNK,
    FrameError,
    FrameParser,
    chunk_digest,
    encode_header,
    frame_ranges,
    stream_length,
)


def encode(data: bytes, start: int, chunk: int) -> bytes:
    out = bytearray()
    for offset, length in frame_ranges(start, len(data), chunk):
        payload = data[offset : offset + length]
        out += encode_header(offset, length, chunk_digest(payload)) + payload
    return bytes(out)


@pytest.mark.parametrize("start", [0, 1000, 65536])
def test_any_cut_of_the_stream_parses_back_to_the_same_bytes(start: int) -> None:
    data = os.urandom(300_000)
    stream = encode(data, start, chunk=65536)
    assert len(stream) == stream_length(start, len(data), 65536)
    rng = random.Random(start)
    parser = FrameParser(max_payload=65536)
    frames = []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 3, 7, 100, 4096, 70000])
        frames += parser.feed(stream[pos : pos + step])
        pos += step
    assert parser.idle
    assert [f.offset for f in frames] == [o for o, _ in frame_ranges(start, len(data), 65536)]
    assert all(f.intact() for f in frames)
    assert b"".join(b"".join(f.pieces) for f in frames) == data[start:]


def test_a_flipped_payload_byte_fails_the_digest() -> None:
    data = os.urandom(10_000)
    stream = bytearray(encode(data, 0, chunk=4096))
    stream[-5] ^= 0x40
    frames = FrameParser(4096).feed(bytes(stream))
    assert [f.intact() for f in frames] == [True, True, False]


def test_a_stream_cut_inside_a_frame_is_not_idle() -> None:
    data = os.urandom(5000)
    parser = FrameParser(8192)
    assert parser.feed(encode(data, 0, 8192)[:-10]) == []
    assert not parser.idle


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x10\x00",  # a header longer than any real one
        b"\x00\x00\x00\x00",  # an empty header
    ],
)
def test_nonsense_header_lengths_are_refused(raw: bytes) -> None:
    with pytest.raises(FrameError):
        FrameParser().feed(raw)


def test_payloads_larger_than_the_chunk_size_are_refused() -> None:
    with pytest.raises(FrameError, match="length"):
        FrameParser(max_payload=CHUNK).feed(encode_header(0, CHUNK + 1, bytes(8)))


def test_stream_length_of_a_big_image_matches_the_frames() -> None:
    size = 50 * CHUNK + 123
    expected = sum(len(encode_header(o, n, bytes(8))) + n for o, n in frame_ranges(0, size))
    assert stream_length(0, size) == expected

"""The upload's file part is cut exactly at its boundary, however the network splits the body."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from coordinator.api.file_part import BrokenBody, FilePartStream

BOUNDARY = "----pvesphere7MA4YWxkTrZu0gW"


def body(data: bytes, after: bytes) -> bytes:
    return data + b"\r\n--" + BOUNDARY.encode() + after


async def read(raw: bytes, sizes: list[int]) -> tuple[bytes, bool | None]:
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), limit=1 << 16, loop=loop)
    pos = 0
    for size in sizes:
        stream.feed_data(raw[pos : pos + size])
        pos += size
        if pos >= len(raw):
            break
    if pos < len(raw):
        stream.feed_data(raw[pos:])
    stream.feed_eof()
    part = FilePartStream(stream, BOUNDARY)
    got = b"".join([bytes(c) async for c in part.chunks()])
    return got, part.more_parts


@pytest.mark.parametrize("seed", range(20))
async def test_any_split_gives_back_exactly_the_file(seed: int) -> None:
    rng = random.Random(seed)
    data = os.urandom(rng.randrange(0, 5000))
    # data that looks like a boundary start near the end is the hard case
    data += b"\r\n--" + BOUNDARY.encode()[: rng.randrange(0, len(BOUNDARY))]
    raw = body(data, b"--\r\n")
    sizes = [rng.choice([1, 2, 5, len(BOUNDARY), 64, 1000]) for _ in range(len(raw))]
    got, more = await read(raw, sizes)
    assert got == data and more is False


async def test_a_part_after_the_file_is_noticed() -> None:
    got, more = await read(
        body(b"image bytes", b'\r\nContent-Disposition: form-data; name="x"\r\n'), [3] * 100
    )
    assert got == b"image bytes" and more is True


async def test_a_body_that_ends_inside_the_file_is_broken() -> None:
    with pytest.raises(BrokenBody):
        await read(b"half an image", [4])

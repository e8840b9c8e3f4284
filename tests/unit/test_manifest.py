"""The chunk manifest (shared/manifest.py): its canonical bytes, its checks, and the plan
a target makes from it."""

from __future__ import annotations

import hashlib
import os

import blake3
import pytest

from shared.frames import CHUNK
from shared.manifest import (
    Manifest,
    ManifestBuilder,
    ManifestInvalid,
    Source,
    decode,
    is_zero,
    needed_bitmap,
    needed_indexes,
    plan,
)


def build(data: bytes) -> Manifest:
    builder = ManifestBuilder(len(data))
    for at in range(0, len(data), CHUNK):
        builder.add(data[at : at + CHUNK])
    return builder.result()


def test_zero_chunks_are_marked_and_the_image_digest_covers_every_byte() -> None:
    data = os.urandom(CHUNK) + bytes(CHUNK) + os.urandom(1000)
    manifest = build(data)
    assert manifest.chunks[0] == blake3.blake3(data[:CHUNK]).digest()
    assert manifest.chunks[1] == b""
    assert manifest.span(2) == (2 * CHUNK, 1000)
    assert manifest.image_sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.data_bytes() == CHUNK + 1000 and manifest.data_bytes(CHUNK) == 1000


def test_the_encoding_round_trips_and_only_its_canonical_form_is_accepted() -> None:
    manifest = build(os.urandom(CHUNK + 5))
    raw = manifest.encode()
    assert decode(raw) == manifest
    assert manifest.digest() == hashlib.sha256(raw).hexdigest()
    with pytest.raises(ManifestInvalid):
        decode(raw[:-1])
    with pytest.raises(ManifestInvalid, match="chunks"):
        decode(Manifest(manifest.size + CHUNK, manifest.image_sha256, manifest.chunks).encode())
    with pytest.raises(ManifestInvalid, match="32 bytes"):
        decode(Manifest(manifest.size, manifest.image_sha256, (b"x", manifest.chunks[1])).encode())
    with pytest.raises(ManifestInvalid, match="chunk"):
        decode(Manifest(manifest.size, manifest.image_sha256, manifest.chunks, chunk=1 << 20).encode())


def test_is_zero() -> None:
    assert is_zero(bytes(CHUNK + 3)) and is_zero(b"")
    assert not is_zero(bytes(CHUNK) + b"\x01")
    assert not is_zero(memoryview(b"\x00\x00\x02"))


def test_a_target_takes_zeros_as_holes_held_chunks_from_seeds_and_the_rest_from_the_network() -> None:
    a, b, c = (os.urandom(CHUNK) for _ in range(3))
    manifest = build(a + bytes(CHUNK) + b + c)
    held = {blake3.blake3(a).digest(), blake3.blake3(c).digest()}
    sources = plan(manifest, held.__contains__)
    assert sources == [Source.SEED, Source.ZERO, Source.NET, Source.SEED]
    # A seed chunk found corrupt is refused: it comes over the network next time.
    assert plan(manifest, held.__contains__, frozenset({3}))[3] is Source.NET
    bitmap = needed_bitmap(sources)
    assert list(needed_indexes(bitmap, 4)) == [2]
    assert list(needed_indexes(needed_bitmap([Source.NET] * 17), 17)) == list(range(17))
    with pytest.raises(ManifestInvalid):
        list(needed_indexes(b"\xff", 4))

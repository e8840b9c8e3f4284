"""Chunk manifests and signed tickets for images held in memory (receive-side unit tests)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from shared.frames import CHUNK, Frame, chunk_digest
from shared.manifest import Manifest, ManifestBuilder
from shared.tickets import TicketSigner


def manifest_of(image: bytes) -> Manifest:
    builder = ManifestBuilder(len(image))
    for at in range(0, len(image), CHUNK):
        builder.add(image[at : at + CHUNK])
    return builder.result()


def ticket_for_image(
    signer: TicketSigner,
    image: bytes,
    *,
    task_id: int,
    task_uid: str,
    epoch: int = 1,
    node: str = "pve-node2",
) -> tuple[str, bytes]:
    """A ticket for a copy of ``image`` and the manifest bytes it signs."""
    manifest = manifest_of(image)
    ticket = signer.issue(
        task_id=task_id,
        task_uid=task_uid,
        epoch=epoch,
        node=node,
        size=len(image),
        sha256=hashlib.sha256(image).hexdigest(),
        manifest=manifest.digest(),
        fmt="raw",
    )
    return ticket, manifest.encode()


async def chunk_frames(image: bytes, start: int = 0, end: int | None = None) -> AsyncIterator[Frame]:
    """The frames of the chunks of [start, end) that are not zeros (what a sender streams)."""
    for offset in range(start, len(image) if end is None else end, CHUNK):
        piece = image[offset : offset + CHUNK]
        if piece.count(0) != len(piece):
            yield Frame(offset, chunk_digest(piece), [memoryview(piece)])

"""A copy moves the guest view without its zeros: only the chunks with data cross the link."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from pathlib import Path

import pytest

from agent.staging import Staging
from shared.frames import CHUNK
from shared.tickets import TicketSigner
from tests.support.transfers import TargetAgent, send, staged_manifest

GiB = 1 << 30
MiB = 1 << 20


def _sparse_raw(path: Path, virtual: int, data: int, region: int) -> None:
    """``data`` random bytes in regions of ``region`` bytes spread over a sparse raw file;
    the regions start 1 MiB off the chunk grid, so chunks at their edges are part zeros."""
    stride = virtual // (data // region)
    with open(path, "wb") as f:
        f.truncate(virtual)
        for at in range(MiB, virtual - region, stride):
            f.seek(at)
            f.write(os.urandom(region))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * MiB):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.slow
def test_a_raw_image_of_8_gib_with_1_gib_of_data_sends_at_most_1_05_gib(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-1-0a1b2c3d.raw"
    # Four regions of 256 MiB, each 1 MiB off the grid: 4 chunks at their ends are part zeros.
    _sparse_raw(staging.path(name), 8 * GiB, 1 * GiB, 256 * MiB)
    signer = TicketSigner(tmp_path / "key")

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        zero_chunks = sum(1 for d in ready.manifest.chunks if not d)
        assert zero_chunks * CHUNK >= 6.9 * GiB  # the map and the content both say so
        target = TargetAgent(tmp_path / "target", signer)
        await target.start()
        try:
            await send(ready, target, task_id=1, task_uid=secrets.token_hex(16))
            view = target.receive(1).view()
        finally:
            await target.stop()
        assert view.state == "complete", view
        assert view.size == 8 * GiB
        assert view.received_bytes <= 1.05 * GiB, view.received_bytes
        assert view.received_bytes + view.reused_bytes == 8 * GiB
        copy = target.receive(1).path
        # The zeros are holes at the target too: its disk holds about the data alone.
        assert copy.stat().st_blocks * 512 <= 1.1 * GiB
        assert _sha256(copy) == _sha256(staging.path(name))

    asyncio.run(scenario())

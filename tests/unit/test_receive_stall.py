"""A sender that goes silent mid-stream: the receive gives up on it, keeping what it verified."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.staging import Staging
from agent.transfer import receive as receive_module
from agent.transfer.errors import TransferRefused
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receives
from agent.transfer.send import RateLimit, Sender
from shared.frames import CHUNK, Frame, chunk_digest
from shared.tickets import TicketSigner, TicketVerifier
from tests.support.manifests import ticket_for_image

PIECE = CHUNK


async def _never(_: int) -> str:
    raise AssertionError("no relay in this test")


def test_a_silent_sender_is_dropped_and_the_verified_prefix_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receive_module, "STALL_SECONDS", 0.3)
    image = os.urandom(2 * PIECE)
    signer = TicketSigner(tmp_path / "key")
    ticket, manifest = ticket_for_image(signer, image, task_id=5, task_uid="5a" * 16)

    async def first_half_then_silence() -> AsyncIterator[Frame]:
        first = image[:PIECE]
        yield Frame(0, chunk_digest(first), [memoryview(first)])
        await asyncio.sleep(3600)

    async def scenario() -> None:
        sender = Sender(_never, RateLimit(0), ssl.create_default_context(), PeerPolicy())
        receives = Receives(
            Staging(tmp_path / "staging"), "pve-node2", PeerPolicy(TicketVerifier(signer.public_key)), sender
        )
        session, receive, _needed = receives.open_session(5, ticket, [], manifest)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransferRefused) as refused:
            # (wait_for: a broken stall check fails the test instead of hanging it)
            await asyncio.wait_for(receives.stream(5, session.id, first_half_then_silence()), 10)
        assert (refused.value.status, refused.value.error) == (408, "stalled")
        assert asyncio.get_running_loop().time() - started < 3
        # The chunk that came before the silence is verified and on disk: a resume starts after it.
        assert receive.view().verified == PIECE
        assert receive.part_path.read_bytes() == image[:PIECE]
        await sender.close()

    asyncio.run(scenario())

"""A task id that comes back (a deleted task's id reused, another coordinator's numbering)
names another receive: the old task's state neither refuses nor feeds the new task."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
from pathlib import Path

from agent.staging import Staging
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receives
from agent.transfer.send import RateLimit, Sender
from shared.frames import CHUNK
from shared.messages.transfers import Hop
from shared.tickets import TicketSigner, TicketVerifier
from tests.support.manifests import chunk_frames, ticket_for_image

PIECE = CHUNK
TASK_ID = 5


async def _no_relays(_task: int, _uid: str, _epoch: int) -> str:
    raise AssertionError("no relay in this test")


def _with_hops(signed: tuple[str, bytes]) -> tuple[str, list[Hop], bytes]:
    return signed[0], [], signed[1]


def test_a_new_task_under_an_old_tasks_id_gets_a_receive_of_its_own(tmp_path: Path) -> None:
    signer = TicketSigner(tmp_path / "key")
    old_image, new_image = os.urandom(4 * PIECE), os.urandom(3 * PIECE)
    old_uid, new_uid = secrets.token_hex(16), secrets.token_hex(16)

    def ticket(uid: str, epoch: int, image: bytes) -> tuple[str, bytes]:
        return ticket_for_image(signer, image, task_id=TASK_ID, task_uid=uid, epoch=epoch)

    async def scenario() -> None:
        sender = Sender(_no_relays, RateLimit(0), ssl.create_default_context(), PeerPolicy())
        policy = PeerPolicy(TicketVerifier(signer.public_key))
        receives = Receives(Staging(tmp_path / "staging"), "pve-node2", policy, sender)
        # The deleted task got to its third attempt and half its image.
        session, old, _ = receives.open_session(TASK_ID, *_with_hops(ticket(old_uid, 3, old_image)))
        await receives.stream(TASK_ID, session.id, chunk_frames(old_image, end=2 * PIECE))
        assert old.view().verified == 2 * PIECE

        # The new task under the same id starts at attempt 1: not stale, and from byte 0.
        session, new, _ = receives.open_session(TASK_ID, *_with_hops(ticket(new_uid, 1, new_image)))
        assert new is not old and new.rec.verified == 0
        view = await receives.stream(TASK_ID, session.id, chunk_frames(new_image))
        assert (view.state, view.epoch, view.task_uid) == ("complete", 1, new_uid)
        assert new.path.read_bytes() == new_image

        # Each is found by its uid; the old one's bytes are untouched until it is removed.
        assert receives.get(TASK_ID, old_uid) is old and receives.get(TASK_ID, new_uid) is new
        assert old.part_path.read_bytes() == old_image[: 2 * PIECE]
        assert receives.remove(TASK_ID, old_uid)
        assert receives.get(TASK_ID, new_uid) is new and new.path.exists()
        await sender.close()

    asyncio.run(scenario())

    # After a restart (state read back from disk) the uid still tells them apart.
    sender = Sender(_no_relays, RateLimit(0), ssl.create_default_context(), PeerPolicy())
    again = Receives(
        Staging(tmp_path / "staging"), "pve-node2", PeerPolicy(TicketVerifier(signer.public_key)), sender
    )
    assert list(again.receives) == [new_uid] and again.get(TASK_ID) is again.receives[new_uid]


def test_a_receive_saved_before_uids_is_found_under_the_uid_the_upgrade_gave_its_task(
    tmp_path: Path,
) -> None:
    """0003_transfer gives existing tasks the uid ``f"{id:032x}"``: a copy in flight across
    the upgrade keeps its verified bytes."""
    staging = Staging(tmp_path / "staging")
    (staging.root / "receives").mkdir(parents=True)
    name = staging.new_name("sync", TASK_ID, "raw")
    staging.part_path(name).write_bytes(os.urandom(PIECE))
    legacy = {
        "task_id": TASK_ID,
        "epoch": 2,
        "size": 3 * PIECE,
        "sha256": "ab" * 32,
        "fmt": "raw",
        "name": name,
    }
    (staging.root / "receives" / f"{TASK_ID}.json").write_text(json.dumps(legacy))

    sender = Sender(_no_relays, RateLimit(0), ssl.create_default_context(), PeerPolicy())
    receives = Receives(staging, "pve-node2", PeerPolicy(), sender)
    receive = receives.get(TASK_ID, f"{TASK_ID:032x}")
    assert receive is not None and receive.rec.verified == PIECE and staging.part_path(name).exists()
    assert [p.name for p in (staging.root / "receives").glob("*.json")] == [f"{TASK_ID:032x}.json"]

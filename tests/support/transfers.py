"""Two agents' transfer sides in the test process: a source that sends a staged image and
a target that receives it over loopback HTTP (the production routes, Receives and Sender),
without PVE, a coordinator or subprocesses. For tests of what a copy moves."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from aiohttp import web

from agent.appkeys import EVICTOR, PLAIN_DATA, RECEIVES, TRANSFER_POLICY
from agent.eviction import Evictor
from agent.staging import Staging
from agent.staging_budget import Budget
from agent.transfer import routes
from agent.transfer.guest_image import RoomMaker
from agent.transfer.manifests import Ready, StagedManifests
from agent.transfer.plain_data import PlainData
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receive, Receives
from agent.transfer.seeds import Seeds
from agent.transfer.send import RateLimit, Sender, StagedImage
from shared.messages.transfers import Hop, Seed
from shared.tickets import TicketSigner, TicketVerifier

NODE = "pve-node2"
DEADLINE = 300.0


async def _allowed(_name: str) -> tuple[bool, str]:
    return False, "no eviction in this test"


async def staged_manifest(staging: Staging, name: str, make_room: RoomMaker | None = None) -> Ready:
    """Build (and keep) the manifest of the staged image ``name``, as a source agent does."""
    manifests = StagedManifests(staging, make_room)
    manifests.view(name)
    await asyncio.gather(*manifests._builds.values())
    ready = manifests.cached(name)
    assert ready is not None
    return ready


class TargetAgent:
    """The peer routes of one target agent, on a loopback port."""

    def __init__(
        self, root: Path, signer: TicketSigner, disks: dict[int, tuple[Path, str]] | None = None
    ) -> None:
        """``disks``: the VMs this node holds, by vmid (file, format): what seeds resolve to
        (the agent asks PVE for them: seed_source.py)."""
        self.root = root
        self.signer = signer
        self.disks = disks or {}
        self.staging = Staging(root / "staging")
        self.sender = Sender(self._no_ticket, RateLimit(0), ssl.create_default_context(), PeerPolicy())
        self.seeds = Seeds(self.staging.root / "receives" / "seeds", self._resolve)
        self.receives = Receives(
            self.staging, NODE, PeerPolicy(TicketVerifier(signer.public_key)), self.sender, self.seeds
        )

    async def _resolve(self, seed: Seed) -> tuple[Path, str] | None:
        return self.disks.get(seed.vmid)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _no_ticket(self, _task: int, _uid: str, _epoch: int) -> str:
        raise AssertionError("no relay in this test")

    async def start(self) -> str:
        app = web.Application()
        app[RECEIVES] = self.receives
        app[TRANSFER_POLICY] = self.receives.policy
        app[EVICTOR] = Evictor(self.staging, Budget(share=1.0), _allowed, set, lambda _n: None)
        app[PLAIN_DATA] = PlainData(web.Application(), "127.0.0.1", "127.0.0.1")
        routes.add_routes(app)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self.runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        await self.sender.close()
        await self.seeds.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def receive(self, task_id: int) -> Receive:
        found = self.receives.get(task_id)
        assert found is not None, f"no receive of task {task_id}"
        return found


async def send(
    ready: Ready,
    target: TargetAgent,
    *,
    task_id: int,
    task_uid: str,
    epoch: int = 1,
    seeds: list[Seed] | None = None,
    rate: int = 0,
    codecs: tuple[str, ...] = (),
) -> None:
    """Send the staged image to ``target`` with a fresh ticket per session, until the transfer
    ends; ``codecs``: the compressions offered (the target's ``sender.codecs``: accepted)."""
    await send_chain(ready, [(target, task_id, task_uid, seeds or [])], epoch=epoch, rate=rate, codecs=codecs)


async def send_chain(
    ready: Ready,
    hops: list[tuple[TargetAgent, int, str, list[Seed]]],
    epoch: int = 1,
    rate: int = 0,
    codecs: tuple[str, ...] = (),
) -> None:
    """Send the staged image along a chain of (target, task id, task uid, seeds): the source
    streams to the first, which relays to the next. Returns once the source's part is done."""
    signer = hops[0][0].signer
    uids = {task_id: uid for _t, task_id, uid, _s in hops}

    async def fresh(task_id: int, _uid: str, _epoch: int) -> str:
        return ticket(signer, ready, task_id, uids[task_id], epoch)

    sender = Sender(fresh, RateLimit(rate), ssl.create_default_context(), PeerPolicy(), codecs)
    chain = [
        Hop(task_id, uid, epoch, NODE, target.url, ticket(signer, ready, task_id, uid, epoch), seeds)
        for target, task_id, uid, seeds in hops
    ]
    try:
        await asyncio.wait_for(
            sender.start(f"t{hops[0][1]}", StagedImage(ready.image.path, ready.image, ready.raw), chain),
            DEADLINE,
        )
    finally:
        await sender.close()


def ticket(signer: TicketSigner, ready: Ready, task_id: int, task_uid: str, epoch: int) -> str:
    m = ready.manifest
    return signer.issue(
        task_id=task_id,
        task_uid=task_uid,
        epoch=epoch,
        node=NODE,
        size=m.size,
        sha256=m.image_sha256,
        manifest=m.digest(),
        fmt="raw",
    )

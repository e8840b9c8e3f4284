"""The two agents of ``benchmarks sync-compression``, each a process of its own (in its
network namespace): ``receive`` serves the agent's peer routes (Receives, the production
routes) until killed; ``send`` streams a staged image to it once, with or without
offering zstd, and prints the seconds the transfer took and the bytes that crossed.

``python -m benchmarks.compression_peer receive ROOT KEY HOST PORT``
``python -m benchmarks.compression_peer send ROOT NAME KEY URL TASK_ID {zstd,plain}``

Plain HTTP between them (the insecure data plane): TLS costs both modes alike, and
without it a plain stream is at its fastest, the harder case for compression on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import sys
import time
from pathlib import Path

import uvloop
from aiohttp import web

from agent.appkeys import EVICTOR, PLAIN_DATA, RECEIVES, TRANSFER_POLICY
from agent.client import AgentClient
from agent.eviction import Evictor
from agent.staging import Staging
from agent.staging_budget import Budget
from agent.transfer import routes
from agent.transfer.manifests import Ready, StagedManifests
from agent.transfer.plain_data import PlainData
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receives
from agent.transfer.seeds import Seeds
from agent.transfer.send import RateLimit, Sender, StagedImage
from shared.messages.transfers import Hop
from shared.tickets import TicketSigner, TicketVerifier
from shared.wire_codec import CODECS

NODE = "pve-bench"
TASK_UID = "0" * 32
DEADLINE = 600.0


async def _no_ticket(_task: int, _uid: str, _epoch: int) -> str:
    raise RuntimeError("no relay in this benchmark")


async def _no_eviction(_name: str) -> tuple[bool, str]:
    return False, "no eviction in this benchmark"


async def receive(root: Path, key: Path, host: str, port: int) -> None:
    staging = Staging(root / "staging")
    sender = Sender(_no_ticket, RateLimit(0), ssl.create_default_context(), PeerPolicy(), CODECS)
    policy = PeerPolicy(TicketVerifier(TicketSigner(key).public_key))
    app = web.Application()
    app[RECEIVES] = Receives(staging, NODE, policy, sender, Seeds(root / "seeds", None))
    app[TRANSFER_POLICY] = policy
    app[EVICTOR] = Evictor(staging, Budget(share=1.0), _no_eviction, set, lambda _n: None)
    app[PLAIN_DATA] = PlainData(web.Application(), host, host)
    routes.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _manifest(staging: Staging, name: str) -> Ready:
    manifests = StagedManifests(staging)
    async with asyncio.timeout(DEADLINE):
        while True:
            if manifests.view(name).state == "ready":
                ready = manifests.cached(name)
                assert ready is not None
                return ready
            await asyncio.sleep(0.1)


async def send(root: Path, name: str, key: Path, url: str, task_id: int, codecs: tuple[str, ...]) -> None:
    ready = await _manifest(Staging(root), name)
    signer = TicketSigner(key)
    m = ready.manifest

    def ticket() -> str:
        return signer.issue(
            task_id=task_id,
            task_uid=TASK_UID,
            epoch=1,
            node=NODE,
            size=m.size,
            sha256=m.image_sha256,
            manifest=m.digest(),
            fmt="raw",
        )

    async def fresh(_task: int, _uid: str, _epoch: int) -> str:
        return ticket()

    sender = Sender(fresh, RateLimit(0), ssl.create_default_context(), PeerPolicy(), codecs)
    hop = Hop(task_id, TASK_UID, 1, NODE, url, ticket())
    started = time.perf_counter()
    try:
        await asyncio.wait_for(
            sender.start("bench", StagedImage(ready.image.path, ready.image, ready.raw), [hop]), DEADLINE
        )
        seconds = time.perf_counter() - started
        view = await AgentClient(sender.http, url).receive_state(task_id, TASK_UID)
    finally:
        await sender.close()
    if view.state != "complete":
        raise RuntimeError(f"the copy did not complete: {view}")
    print(json.dumps({"seconds": seconds, "crossed": view.received_bytes, "size": view.size}), flush=True)


def main(argv: list[str]) -> None:
    if os.environ.get("PVESPHERE_BENCH_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    if argv[0] == "receive":
        uvloop.run(receive(Path(argv[1]), Path(argv[2]), argv[3], int(argv[4])))
    else:
        codecs = CODECS if argv[6] == "zstd" else ()
        uvloop.run(send(Path(argv[1]), argv[2], Path(argv[3]), argv[4], int(argv[5]), codecs))


if __name__ == "__main__":
    main(sys.argv[1:])

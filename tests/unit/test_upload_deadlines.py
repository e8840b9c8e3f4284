"""Deadlines on the receiving side of an upload (shared/turn_deadline.py), over real HTTP.

The coordinator's leg (coordinator/api/upload_to_agent.py with the production
AgentClient) against a fake agent, and the CLI's leg (client/api.py) against a fake
coordinator: a receiver that stops taking bytes, or takes them all and never answers,
fails the upload with what it missed; one that is slow but keeps taking them does not.
The deadlines are shortened (1-2 s) here; in production they are 120 s and 600 s + 10 s/GiB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.client import AgentClient, AgentUnreachable
from client.answers import Unreachable
from client.api import Api
from client.settings import Settings
from coordinator.api.upload_to_agent import upload_to_agent
from shared.messages import encode
from shared.messages.uploads import Staged

MIB = 1 << 20
STAGED = Staged(staged_name="upload-7-0a1b2c3d.raw", size=0, sha256="0" * 64, format="raw", virtual_size=0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def receivers(release: asyncio.Event) -> dict[str, Handler]:
    """The three receivers; ``release`` ends the ones that hang (the test's clean-up)."""

    async def stops_reading(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(status=500)

    async def never_answers(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(status=500)

    async def slow_but_moving(request: web.Request) -> web.Response:
        received = 0
        while piece := await request.content.read(256 << 10):
            received += len(piece)
            await asyncio.sleep(0.03)  # ~8 MiB/s
        answer = msgspec.structs.replace(STAGED, size=received, virtual_size=received)
        return web.Response(body=encode(answer), content_type="application/json")

    return {"stops": stops_reading, "mute": never_answers, "slow": slow_but_moving}


async def chunks(total: int) -> AsyncIterator[bytes]:
    piece = bytes(MIB)
    for _ in range(total // MIB):
        yield piece


async def _serve(path: str, method: str, handler: Handler) -> TestServer:
    app = web.Application(client_max_size=1 << 40)
    app.router.add_route(method, path, handler)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.mark.parametrize(
    ("receiver", "total", "missed"),
    [
        ("stops", 256 * MIB, "it took no data for 1 s"),
        ("mute", 4 * MIB, "it did not answer within 1 s of the last byte"),
    ],
)
async def test_coordinator_gives_up_on_an_agent_that_stalls(receiver: str, total: int, missed: str) -> None:
    release = asyncio.Event()
    server = await _serve("/v1/uploads/{id}", "PUT", receivers(release)[receiver])
    try:
        async with aiohttp.ClientSession() as session:
            agent = AgentClient(session, str(server.make_url("")))
            started = time.monotonic()
            with pytest.raises(AgentUnreachable, match=missed):
                await upload_to_agent(
                    agent, 7, "raw", 1 << 40, 1 << 40, chunks(total), "x.raw", None, 1.0, lambda _: 1.0
                )
            assert 1.0 <= time.monotonic() - started < 15
    finally:
        release.set()
        await server.close()


async def test_an_agent_slower_than_the_deadline_in_total_but_always_taking_bytes_is_waited_for() -> None:
    server = await _serve("/v1/uploads/{id}", "PUT", receivers(asyncio.Event())["slow"])
    try:
        async with aiohttp.ClientSession() as session:
            agent = AgentClient(session, str(server.make_url("")))
            started = time.monotonic()
            staged = await upload_to_agent(
                agent, 7, "raw", 1 << 40, 1 << 40, chunks(12 * MIB), "x.raw", None, 1.0, lambda _: 1.0
            )
            assert staged.size == 12 * MIB
            assert time.monotonic() - started > 1.0  # longer than one turn may take: per turn, not total
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("receiver", "size", "missed"),
    [
        ("stops", 256 * MIB, "the coordinator took no data for 1 s"),
        ("mute", 4 * MIB, "the coordinator did not answer within 1 s of the last byte"),
    ],
)
async def test_cli_upload_gives_up_on_a_coordinator_that_stalls(
    tmp_path: Path, receiver: str, size: int, missed: str
) -> None:
    image = tmp_path / "disk.raw"
    with open(image, "wb") as f:
        f.truncate(size)
    release = asyncio.Event()
    server = await _serve("/api/v1/templates/upload", "POST", receivers(release)[receiver])
    settings = Settings(str(server.make_url("")).rstrip("/"), "token", None, tmp_path / "none.toml")
    sent: list[int] = []
    try:
        async with Api(settings) as api:
            api.upload_stall = 1.0
            api.upload_answer_within = lambda _: 1.0
            with pytest.raises(Unreachable, match=f"the upload to .* stopped: {missed}"):
                await api.upload("/templates/upload", {"template_name": "t"}, image, sent.append)
    finally:
        release.set()
        await server.close()
    assert sum(sent) <= size

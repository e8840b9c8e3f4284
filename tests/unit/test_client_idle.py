"""The watchdog on an upload client's body: silence while a read waits drops it, nothing else does."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from coordinator.api.client_idle import ClientIdle, IdleWatch

IDLE = 0.3


def _body() -> StreamReader:
    """A request body whose connection is open and whose bytes the test feeds."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    protocol.connection_made(mock.Mock(spec=asyncio.Transport))
    return StreamReader(protocol, limit=1 << 16, loop=loop)


async def test_a_read_that_waits_without_a_byte_is_failed() -> None:
    body = _body()
    async with IdleWatch(body, IDLE).running() as watch:
        with pytest.raises(ClientIdle, match=f"no data from the client for {IDLE:g} s"), watch.waiting():
            # (wait_for: a watchdog that never fires fails the test instead of hanging it)
            await asyncio.wait_for(body.readline(), 10)
    # The body stays failed: whatever reads it next (aiohttp, after the answer) stops too.
    with pytest.raises(ClientIdle):
        await body.read(1)


async def test_bytes_trickling_in_keep_a_slow_read_alive() -> None:
    body = _body()

    async def trickle() -> None:
        for byte in b"template_name":
            await asyncio.sleep(IDLE / 3)
            body.feed_data(bytes([byte]))
        body.feed_data(b"\r\n")

    async with IdleWatch(body, IDLE).running() as watch:
        feeder = asyncio.create_task(trickle())
        with watch.waiting():
            # One readline that takes far longer than IDLE, while bytes keep coming.
            line = await asyncio.wait_for(body.readline(), 10)
        await feeder
    assert line == b"template_name\r\n"


async def test_time_spent_not_waiting_for_the_client_does_not_count() -> None:
    body = _body()
    async with IdleWatch(body, IDLE).running() as watch:
        await asyncio.sleep(IDLE * 3)  # e.g. waiting for the agent, or the rate cap
        body.feed_data(b"more")
        with watch.waiting():
            assert await body.read(4) == b"more"

"""`--wait`: follow a command's work to its end on the events stream, drawing it.

The stream is opened first, then the work's current state is read with GETs (what
finished before the stream opened is not in it), then every event is taken in. If the
stream goes quiet for RESYNC seconds the GETs are read again, and if it drops it is
opened again: a lost event can delay the picture, never freeze it. A coordinator
without the events stream (404) is followed by GETs alone, once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import msgspec

from client.api import Api, ApiFailure, Unreachable
from client.progress import Board
from client.work import Work
from shared.messages import decode
from shared.messages.events import Event

RESYNC = 10.0
POLL = 1.0
# A stream that closes at once must not be reopened in a tight loop.
REOPEN_AFTER = 0.5
# How often in a row the stream may fail to open before the wait gives up.
RECONNECTS = 5

Snapshot = Callable[[], Awaitable[list[Mapping[str, Any]]]]


def _take(work: Work, board: Board, states: list[Mapping[str, Any]]) -> None:
    for state in states:
        item = work.apply(state)
        if item is not None:
            board.show(item)


async def _read(ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    try:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = decode(Event, msg.data.encode())
                except msgspec.DecodeError:
                    continue  # a kind or field this client does not know: not ours to show
                queue.put_nowait(msgspec.structs.asdict(event))
    finally:
        queue.put_nowait(None)  # the stream ended


async def follow(api: Api, work: Work, board: Board, snapshot: Snapshot, filters: Mapping[str, Any]) -> None:
    """Until ``work.done``."""
    failures = 0
    while not work.done:
        try:
            async with api.events(**filters) as ws:
                failures = 0
                queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
                reader = asyncio.create_task(_read(ws, queue))
                try:
                    _take(work, board, await snapshot())
                    while not work.done:
                        try:
                            event = await asyncio.wait_for(queue.get(), RESYNC)
                        except TimeoutError:
                            _take(work, board, await snapshot())
                            continue
                        if event is None:
                            break  # dropped (or the coordinator stops): open it again
                        _take(work, board, [event])
                finally:
                    reader.cancel()
                    # A stream cut mid-message ends the reader with the client's error: opened again.
                    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                        await reader
            if not work.done:
                await asyncio.sleep(REOPEN_AFTER)
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            await _poll(work, board, snapshot)
        except Unreachable:
            failures += 1
            if failures >= RECONNECTS:
                raise
            await asyncio.sleep(failures)


async def _poll(work: Work, board: Board, snapshot: Snapshot) -> None:
    while not work.done:
        _take(work, board, await snapshot())
        if not work.done:
            await asyncio.sleep(POLL)

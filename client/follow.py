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

from client.answers import ApiFailure, Unreachable
from client.api import Api
from client.output import Output
from client.progress import Board, board
from client.work import Work
from shared.messages import decode
from shared.messages.events import Event

RESYNC = 10.0
POLL = 1.0
# A stream that closes at once must not be reopened in a tight loop.
REOPEN_AFTER = 0.5
# After an import failed, how long its sync tasks may take to be failed in turn.
DOOMED_GRACE = 10.0
# How often in a row the stream may fail to open before the wait gives up.
RECONNECTS = 5

Snapshot = Callable[[], Awaitable[list[Mapping[str, Any]]]]


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


class _Follower:
    def __init__(
        self, api: Api, work: Work, board: Board, snapshot: Snapshot, deadline: asyncio.Timeout
    ) -> None:
        self.api, self.work, self.board, self.snapshot, self.deadline = api, work, board, snapshot, deadline

    def take(self, states: list[Mapping[str, Any]]) -> None:
        for state in states:
            item = self.work.apply(state)
            if item is not None:
                self.board.show(item)
        if self.work.doomed and self.deadline.when() is None:
            self.deadline.reschedule(asyncio.get_running_loop().time() + DOOMED_GRACE)

    async def resync(self) -> None:
        self.take(await self.snapshot())

    async def on_stream(self, filters: Mapping[str, Any]) -> None:
        """Until the work is done; reopening the stream when it drops."""
        failures = 0
        while not self.work.done:
            try:
                async with self.api.events(**filters) as ws:
                    failures = 0
                    await self._stream(ws)
                if not self.work.done:
                    await asyncio.sleep(REOPEN_AFTER)
            except ApiFailure as exc:
                if exc.status != 404:
                    raise
                await self.by_polling()
            except Unreachable:
                failures += 1
                if failures >= RECONNECTS:
                    raise
                await asyncio.sleep(failures)

    async def _stream(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        reader = asyncio.create_task(_read(ws, queue))
        try:
            await self.resync()
            while not self.work.done:
                try:
                    event = await asyncio.wait_for(queue.get(), RESYNC)
                except TimeoutError:
                    await self.resync()
                    continue
                if event is None:
                    return  # dropped (or the coordinator stops): opened again
                self.take([event])
        finally:
            reader.cancel()
            # A stream cut mid-message ends the reader with the client's error: opened again.
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await reader

    async def by_polling(self) -> None:
        while not self.work.done:
            await self.resync()
            if not self.work.done:
                await asyncio.sleep(POLL)


async def watch(api: Api, out: Output, work: Work, snapshot: Snapshot, filters: Mapping[str, Any]) -> None:
    """Follow ``work`` with a bar per item on ``out``'s progress stream."""
    shown = board(list(work.items.values()), out.progress_stream, out.plain)
    try:
        await follow(api, work, shown, snapshot, filters)
    finally:
        shown.close()


async def follow(api: Api, work: Work, board: Board, snapshot: Snapshot, filters: Mapping[str, Any]) -> None:
    """Until ``work.done``; once ``work.doomed`` (an import failed), DOOMED_GRACE seconds at
    most for the rest to be failed in turn."""
    try:
        async with asyncio.timeout(None) as deadline:
            await _Follower(api, work, board, snapshot, deadline).on_stream(filters)
    except TimeoutError:
        if not work.doomed:
            raise

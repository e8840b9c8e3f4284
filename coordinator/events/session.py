"""One subscriber's WebSocket: its first state, then its changes, at most 4 a second per object.

Two tasks per connection: one reads what the client sends (nothing is expected; reading is
what lets aiohttp answer pings, see pongs and the client's close), one sends. Every wait
has a deadline: a send that does not finish within ``send_deadline`` (the client stopped
reading and its TCP window is full) closes the connection with 4008, as does a queue that
filled up meanwhile (hub.Subscription); aiohttp's heartbeat closes a client that does not
answer a ping within half the heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from aiohttp import WSMsgType, web

from coordinator.errors import CoordinatorError
from coordinator.events.changes import SnapshotFence
from coordinator.events.hub import Subscription
from coordinator.events.shaping import key_of
from coordinator.events.throttle import Coalescer
from shared.messages.events import CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, Event, encode_event

log = logging.getLogger(__name__)

# How long a close handshake may take before the connection is simply dropped.
CLOSE_DEADLINE = 5.0
# The longest the sender sleeps with nothing to do (it then checks again).
IDLE_WAKE = 5.0


class TooSlow(CoordinatorError):
    """The client does not read its messages fast enough (the connection closes with 4008)."""


async def serve(
    ws: web.WebSocketResponse, sub: Subscription, first: Iterable[Event], send_deadline: float
) -> None:
    """Runs the connection until the client leaves, falls behind or the coordinator stops."""
    sender = asyncio.create_task(_send_all(ws, sub, first, send_deadline), name="events-send")
    receiver = asyncio.create_task(_drain(ws), name="events-receive")
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        for task in (sender, receiver):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    code, reason = None, ""
    if sender.done() and not sender.cancelled():
        exc = sender.exception()
        if isinstance(exc, TooSlow):
            code, reason = CLOSE_TOO_SLOW, str(exc)
        elif isinstance(exc, ConnectionError):
            log.debug("events: the client went while a message was sent: %s", exc)
        elif exc is not None:
            log.error("events: sending failed: %r", exc)
        elif sub.stopping:
            code, reason = CLOSE_GOING_AWAY, "the coordinator is stopping; connect again"
    if code is not None:
        await _close(ws, code, reason)


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120]), CLOSE_DEADLINE)
    except (TimeoutError, ConnectionError):
        pass


async def _drain(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _send(ws: web.WebSocketResponse, event: Event, deadline: float) -> None:
    try:
        await asyncio.wait_for(ws.send_str(encode_event(event)), deadline)
    except TimeoutError:
        raise TooSlow(f"a message waited more than {deadline:.0f} s to be sent: read faster") from None


async def _send_all(
    ws: web.WebSocketResponse, sub: Subscription, first: Iterable[Event], deadline: float
) -> None:
    first = list(first)
    for event in first:
        await _send(ws, event, deadline)
    fence = SnapshotFence(first)
    throttle: Coalescer[Event] = Coalescer()
    while not sub.stopping:
        if sub.overflowed:
            raise TooSlow(f"changes of {sub.queue.maxsize} polls waited for this client: read faster")
        while not sub.queue.empty():
            for event in sub.queue.get_nowait():
                if fence.passes(event):
                    throttle.offer(key_of(event), event)
        for event in throttle.due(time.monotonic()):
            await _send(ws, event, deadline)
        wait = throttle.next_due(time.monotonic())
        sub.signal.clear()  # before looking: a push after this sets it again
        if sub.queue.empty() and not sub.overflowed and not sub.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.signal.wait(), IDLE_WAKE if wait is None else wait)

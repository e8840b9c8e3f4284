"""A WebSocket client of the coordinator's live events, as a user's script would be."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

Message = dict[str, Any]


@dataclass
class Watch:
    """What a connection received: each message with the monotonic time it arrived, and how
    the connection ended (None: still open when the watch stopped)."""

    messages: list[tuple[float, Message]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def events(self) -> list[Message]:
        return [m for _, m in self.messages]

    def of(self, kind: str, object_id: int) -> list[tuple[float, Message]]:
        return [(t, m) for t, m in self.messages if m["kind"] == kind and m["id"] == object_id]


def ws_url(api_base: str, path: str = "/events") -> str:
    return api_base.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + path


async def watch(
    url: str,
    *,
    token: str | None = None,
    params: dict[str, str] | None = None,
    until: Callable[[Watch], bool] = lambda w: False,
    timeout: float = 30.0,
    started: asyncio.Event | None = None,
) -> Watch:
    """Connect and collect messages until ``until`` holds, the server closes, or ``timeout``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    got = Watch()
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http, http.ws_connect(url, params=params, headers=headers) as ws:
        if started is not None:
            started.set()
        while not until(got):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.TEXT:
                got.messages.append((time.monotonic(), json.loads(msg.data)))
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                got.close_code, got.close_reason = ws.close_code, str(msg.extra or "")
                break
    return got


def refused(url: str, *, token: str | None = None, params: dict[str, str] | None = None) -> tuple[int, Any]:
    """The HTTP status and body of an upgrade the server refuses (AssertionError if it accepts)."""

    async def run() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers |= {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
        headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
        async with aiohttp.ClientSession() as http:
            http_url = url.replace("ws://", "http://")
            async with http.get(http_url, params=params, headers=headers) as resp:
                assert resp.status != 101, f"{url} {params} was accepted"
                return resp.status, await resp.json()

    return asyncio.run(run())

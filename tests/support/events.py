"""A WebSocket client of the coordinator's live events, as a user's script would be."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shared.tickets import TicketSigner

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


async def start_watch(url: str, **kw: Any) -> asyncio.Task[Watch]:
    """``watch`` in a task, returned once connected (or once it failed to connect)."""
    started = asyncio.Event()
    task = asyncio.create_task(watch(url, started=started, **kw))
    connected = asyncio.create_task(started.wait())
    await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
    connected.cancel()
    return task


def transfer_ticket(signer: TicketSigner, node: str = "pve-node2") -> str:
    """A real transfer ticket (for a sync's stream between agents), signed with ``signer``."""
    zeros = "0" * 64
    return signer.issue(
        task_id=1, task_uid="0" * 32, epoch=1, node=node, size=1, sha256=zeros, manifest=zeros, fmt="raw"
    )


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


class StalledClient:
    """A WebSocket client that connects and then reads nothing, with a small receive buffer
    (so the coordinator's sends block soon), as a stuck browser tab or a paused process."""

    def __init__(self, host: str, port: int, path: str, token: str) -> None:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def close_code(self, timeout: float = 30.0) -> tuple[int | None, str, int]:
        """Reads everything the server sent: the close frame's code and reason (None: the
        connection ended without one), and how many text messages came before it."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while chunk := self.sock.recv(1 << 16):
                data += chunk
        except OSError:
            pass
        finally:
            self.sock.close()
        texts, pos = 0, 0
        while pos + 2 <= len(data):
            opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
            pos += 2
            if length == 126:
                length, pos = int.from_bytes(data[pos : pos + 2]), pos + 2
            elif length == 127:
                length, pos = int.from_bytes(data[pos : pos + 8]), pos + 8
            payload, pos = data[pos : pos + length], pos + length
            if opcode == 0x8:
                return int.from_bytes(payload[:2]), payload[2:].decode(errors="replace"), texts
            texts += opcode == 0x1
        return None, "", texts

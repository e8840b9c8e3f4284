"""An HTTPS server of disk images for download tests: a certificate from a test CA (the
emulator's CA code, pvesim/tls.py), Range requests answered (or ignored), a body broken off or
stalled mid-way, redirects, a lying Content-Length; every request it saw recorded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.download_policy import DEFAULT_DOWNLOAD_HOSTS
from pvesim.tls import ensure_certificates
from shared.tls import server_context

ETAG = '"image-v1"'
# The longest a stalled answer stays silent (the server's stop ends it sooner).
STALL_LIMIT = 120.0


@dataclass
class Behaviour:
    """What the server does: ``break_after`` bytes of the first answer's body, then the
    connection closes (``stall``: goes silent instead); ``ignore_range``: always the whole file."""

    break_after: int | None = None
    stall: bool = False
    ignore_range: bool = False
    chunked: bool = False  # no Content-Length: the size is known only at the end


@dataclass
class Seen:
    path: str
    range: str | None
    if_range: str | None


@dataclass
class ImageServer:
    base: Path
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    behaviour: Behaviour = field(default_factory=Behaviour)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    ca_file: Path = Path()
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event | None = None

    def add(self, name: str, path: Path) -> str:
        """Serve ``path`` as /``name``; its sha256."""
        data = path.read_bytes()
        self.files[name] = data
        return hashlib.sha256(data).hexdigest()

    async def start(self, host: str = "127.0.0.1") -> None:
        """Serves on ``host`` with a certificate (for it and localhost) from the test CA of
        ``base`` (made once: a directory kept across tests saves the key generation)."""
        self._stopping = asyncio.Event()
        self.base.mkdir(parents=True, exist_ok=True)
        ca, cert, key = ensure_certificates(self.base, "download-tests", [host])
        self.ca_file = ca
        app = web.Application()
        app.router.add_get("/{name:.*}", self._get)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind((host, 0))
        await web.SockSite(self._runner, sock, ssl_context=server_context(cert, key)).start()
        self.port = sock.getsockname()[1]
        self.url = f"https://{host}:{self.port}"

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # (a stalled answer ends)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append(Seen(name, request.headers.get("Range"), request.headers.get("If-Range")))
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        data = self.files.get(name)
        if data is None:
            raise web.HTTPNotFound()
        b = self.behaviour
        start = 0
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and not b.ignore_range and request.headers.get("If-Range") == ETAG:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
        resp = web.StreamResponse(status=206 if start else 200)
        resp.headers["ETag"] = ETAG
        resp.headers["Accept-Ranges"] = "bytes"
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if b.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(data) - start
        await resp.prepare(request)
        first = len(self.seen) == 1 or all(s.path != name for s in self.seen[:-1])
        if first and b.break_after is not None:
            await resp.write(data[start : b.break_after])
            if b.stall:
                assert self._stopping is not None
                await asyncio.wait_for(self._stopping.wait(), STALL_LIMIT)
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(data[start:])
        await resp.write_eof()
        return resp


def image_server_ca(tmp_path_factory: Any) -> Path:
    """The session's image-server CA directory (ca.pem, and a certificate for 127.0.0.1), the
    same for every stack and test of this process: a stack's agents trust it (download_cacert)."""
    base = Path(tmp_path_factory.getbasetemp()) / "image-server-ca"
    base.mkdir(exist_ok=True)
    ensure_certificates(base, "download-tests", ["127.0.0.1"])
    return base


def stack_agent_settings(tmp_path_factory: Any) -> dict[str, str]:
    """What a stack's agents need to download from an ImageServer on 127.0.0.1."""
    return {
        "download_hosts": f"{DEFAULT_DOWNLOAD_HOSTS}, 127.0.0.1",
        "download_cacert": str(image_server_ca(tmp_path_factory) / "ca.pem"),
    }


@contextlib.contextmanager
def serving(server: ImageServer, timeout: float = 30.0) -> Iterator[ImageServer]:
    """``server`` on a loop of its own in a thread, for tests that are not async (stack tests)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="image-server", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()

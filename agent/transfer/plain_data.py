"""The insecure data plane: image streams over plain TCP, where the coordinator's
``data_plane = "insecure"`` says so (as PVE's ``migration: type=insecure`` does).

Only the bytes of a stream go in the clear. The session is opened over HTTPS, with a ticket
the coordinator signed, as always; its answer names a plain listener that serves the data
route alone and exists only while the data plane is insecure. Every chunk is still checked
(xxh3) and the whole image against the sha256 in the signed ticket before PVE sees it, so
bytes changed on the way are caught; what the image holds is visible on the network.
"""

from __future__ import annotations

import socket

from aiohttp import web


class PlainData:
    """A plain-HTTP listener serving ``app`` (the data route alone, transfer/routes.py
    plain_data_app) on ``host`` (an ephemeral port), opened on first use; its URLs name
    ``advertised_host``, the host peers reach this agent by."""

    def __init__(self, app: web.Application, host: str, advertised_host: str) -> None:
        self.app = app
        self.host = host
        self.advertised_host = advertised_host
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def url(self) -> str:
        """The base URL streams go to in the clear (``http://host:port``)."""
        if self._runner is None:
            await self._open()
        host = f"[{self.advertised_host}]" if ":" in self.advertised_host else self.advertised_host
        return f"http://{host}:{self._port}"

    async def _open(self) -> None:
        # Closing does not wait for streams still running on it: they break off, and their
        # senders resume them over TLS (or stop, if the agent stops).
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        await web.SockSite(runner, sock).start()
        self._runner, self._port = runner, int(sock.getsockname()[1])

    async def close(self) -> None:
        """No plain listener any more (the data plane is TLS again, or the agent stops)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

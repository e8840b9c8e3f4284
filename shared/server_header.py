"""The ``Server`` header of our HTTP answers: the product alone. aiohttp's default,
``Python/3.11 aiohttp/3.x``, tells anyone who can reach the port (the agent's runs as root
on a PVE host) which versions to look up exploits for."""

from __future__ import annotations

from aiohttp import web

COORDINATOR = "pvesphere-coordinator"
AGENT = "pvesphere-agent"


def name_server(app: web.Application, name: str) -> None:
    """Every answer of ``app`` (handlers, errors, static files, WebSocket upgrades) says
    ``Server: name``: set before aiohttp writes the headers, which then keeps it."""

    async def set_server(_: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = name

    app.on_response_prepare.append(set_server)

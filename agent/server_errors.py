"""The agent's error body: ``{"error": <slug>, "message": <for humans>}``."""

from __future__ import annotations

from aiohttp import web


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)

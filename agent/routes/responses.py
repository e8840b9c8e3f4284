"""The agent's answers: a message struct (shared/messages/) as JSON, or its error body
``{"error": <slug>, "message": <for humans>}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.error_slugs import ErrorSlug
from shared.messages import encode
from shared.messages.health import ErrorBody


def answer(message: Any) -> web.Response:
    return web.Response(body=encode(message), content_type="application/json")


def json_error(status: int, error: ErrorSlug, message: str) -> web.Response:
    return web.Response(
        body=encode(ErrorBody(error, message)), status=status, content_type="application/json"
    )

"""GET /v1/<ops>/{upload_id} and POST /v1/<ops>/{upload_id}/cancel for the ops that make an
upload's staged image (exports, downloads: agent/upload_ops.py), alike for each kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.routes.responses import answer, json_error
from shared.error_slugs import ErrorSlug
from shared.messages.imports import CancelRequest
from shared.validation import parse

Handler = Callable[[web.Request], Awaitable[web.Response]]


def op_routes(key: web.AppKey[Any], kind: str, not_found: ErrorSlug) -> tuple[Handler, Handler]:
    """The GET and the cancel handler of the ops under ``key`` (``kind``: "export")."""

    def missing(upload_id: str) -> web.Response:
        return json_error(404, not_found, f"no {kind} for upload {upload_id} on this agent")

    async def get_op(request: web.Request) -> web.Response:
        op = request.app[key].ops.get(int(request.match_info["upload_id"]))
        if op is None:
            return missing(request.match_info["upload_id"])
        return answer(op.view())

    async def cancel_op(request: web.Request) -> web.Response:
        """{"reason": ...}: answers once the op has ended (its partial file removed)."""
        try:
            body = parse(CancelRequest, await request.json())
        except ValueError as exc:
            return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
        op = await request.app[key].cancel(int(request.match_info["upload_id"]), body.reason)
        if op is None:
            return missing(request.match_info["upload_id"])
        return answer(op.view())

    return get_op, cancel_op

"""POST /v1/imports, GET /v1/imports/{key}, POST /v1/imports/{key}/cancel: the coordinator's
imports of staged images (agent/importer.py does them)."""

from __future__ import annotations

from aiohttp import web

from agent.appkeys import IMPORTER
from agent.routes.responses import answer, json_error
from shared.error_slugs import ErrorSlug
from shared.messages.imports import CancelRequest, ImportRequest
from shared.validation import parse


async def start_import(request: web.Request) -> web.Response:
    try:
        req = parse(ImportRequest, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    if request.app[IMPORTER].stopping:  # it would be stopped again at once, or outlive the agent
        return json_error(503, ErrorSlug.AGENT_STOPPING, "this agent is stopping; ask again once it is back")
    op = request.app[IMPORTER].start(req)
    return answer(op.view())


async def get_import(request: web.Request) -> web.Response:
    op = request.app[IMPORTER].ops.get(request.match_info["key"])
    if op is None:
        return json_error(
            404, ErrorSlug.IMPORT_NOT_FOUND, f"no import {request.match_info['key']} on this agent"
        )
    return answer(op.view())


async def cancel_import(request: web.Request) -> web.Response:
    """POST /v1/imports/{key}/cancel {"reason": ...}: answers once the import has ended."""
    key = request.match_info["key"]
    try:
        body = parse(CancelRequest, await request.json())
    except ValueError as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    op = await request.app[IMPORTER].cancel(key, body.reason)
    if op is None:
        return json_error(404, ErrorSlug.IMPORT_NOT_FOUND, f"no import {key} on this agent")
    return answer(op.view())

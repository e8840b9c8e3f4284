"""POST /v1/clones, GET /v1/clones/{key}, POST /v1/clones/{key}/cancel: the coordinator's
clones of our templates (agent/cloner.py does them)."""

from __future__ import annotations

from aiohttp import web

from agent.appkeys import CLONER
from agent.cloner import CloneBusy, refusal
from agent.routes.responses import answer, json_error
from shared.error_slugs import ErrorSlug
from shared.messages.clones import CloneRequest
from shared.messages.imports import CancelRequest
from shared.validation import parse


async def start_clone(request: web.Request) -> web.Response:
    try:
        req = parse(CloneRequest, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    refused = refusal(req)
    if refused is not None:
        return json_error(400, ErrorSlug.INVALID_REQUEST, refused)
    cloner = request.app[CLONER]
    if cloner.stopping:  # it would be stopped again at once, or outlive the agent
        return json_error(503, ErrorSlug.AGENT_STOPPING, "this agent is stopping; ask again once it is back")
    try:
        op = cloner.start(req)
    except CloneBusy as exc:
        return json_error(409, ErrorSlug.VM_BUSY, str(exc))
    return answer(op.view())


async def get_clone(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    op = request.app[CLONER].ops.get(key)
    if op is None:
        return json_error(404, ErrorSlug.CLONE_NOT_FOUND, f"no clone {key} on this agent")
    return answer(op.view())


async def cancel_clone(request: web.Request) -> web.Response:
    """POST /v1/clones/{key}/cancel {"reason": ...}: answers once the clone has ended."""
    key = request.match_info["key"]
    try:
        body = parse(CancelRequest, await request.json())
    except ValueError as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    op = await request.app[CLONER].cancel(key, body.reason)
    if op is None:
        return json_error(404, ErrorSlug.CLONE_NOT_FOUND, f"no clone {key} on this agent")
    return answer(op.view())

"""POST /v1/exports/check, POST /v1/exports, GET /v1/exports/{upload_id}, POST
/v1/exports/{upload_id}/cancel: a VM's disk, or a named volume, exported into staging for an
upload (agent/exporter.py does it). A VM, disk, snapshot or volume that will not do is
refused at once, with the status and slug the coordinator passes on."""

from __future__ import annotations

from aiohttp import web

from agent.appkeys import EXPORTER, PVE
from agent.export_source import ExportRefused, locate
from agent.routes.responses import answer, json_error
from agent.routes.upload_ops import op_routes
from shared.error_slugs import ErrorSlug
from shared.messages.exports import ExportAsk, ExportRequest
from shared.validation import parse


async def check_export(request: web.Request) -> web.Response:
    """What an export of this VM's disk (or volume) would read, or why it cannot be done
    (nothing is done)."""
    try:
        ask = parse(ExportAsk, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    try:
        source = await locate(request.app[PVE], ask)
    except ExportRefused as exc:
        return json_error(exc.status, exc.slug, exc.message)
    return answer(source.view)


async def start_export(request: web.Request) -> web.Response:
    try:
        req = parse(ExportRequest, await request.json())
    except ValueError as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    exporter = request.app[EXPORTER]
    if exporter.stopping:
        return json_error(503, ErrorSlug.AGENT_STOPPING, "this agent is stopping; ask again once it is back")
    try:
        op = await exporter.start(req)
    except ExportRefused as exc:
        return json_error(exc.status, exc.slug, exc.message)
    return answer(op.view())


get_export, cancel_export = op_routes(EXPORTER, "export", ErrorSlug.EXPORT_NOT_FOUND)

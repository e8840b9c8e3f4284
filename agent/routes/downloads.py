"""POST /v1/downloads, GET /v1/downloads/{upload_id}, POST /v1/downloads/{upload_id}/cancel:
an image downloaded from an https URL into staging for an upload (agent/downloader.py does
it). A URL this agent will not fetch is refused at once (400 naming the host and the
setting), before any connection is made."""

from __future__ import annotations

from aiohttp import web

from agent.appkeys import DOWNLOADER
from agent.download_policy import DownloadRefused
from agent.routes.responses import answer, json_error
from shared.error_slugs import ErrorSlug
from shared.messages.downloads import DownloadRequest
from shared.messages.imports import CancelRequest
from shared.validation import parse


def _not_found(upload_id: str) -> web.Response:
    return json_error(404, ErrorSlug.DOWNLOAD_NOT_FOUND, f"no download for upload {upload_id} on this agent")


async def start_download(request: web.Request) -> web.Response:
    try:
        req = parse(DownloadRequest, await request.json())
    except ValueError as exc:  # not JSON, or InvalidInput
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    downloader = request.app[DOWNLOADER]
    if downloader.stopping:
        return json_error(503, ErrorSlug.AGENT_STOPPING, "this agent is stopping; ask again once it is back")
    try:
        op = downloader.start(req)
    except DownloadRefused as exc:
        return json_error(exc.status, exc.slug, exc.message)
    return answer(op.view())


async def get_download(request: web.Request) -> web.Response:
    op = request.app[DOWNLOADER].ops.get(int(request.match_info["upload_id"]))
    if op is None:
        return _not_found(request.match_info["upload_id"])
    return answer(op.view())


async def cancel_download(request: web.Request) -> web.Response:
    """{"reason": ...}: answers once the download has ended (its partial file removed)."""
    try:
        body = parse(CancelRequest, await request.json())
    except ValueError as exc:
        return json_error(400, ErrorSlug.INVALID_REQUEST, str(exc)[:500])
    op = await request.app[DOWNLOADER].cancel(int(request.match_info["upload_id"]), body.reason)
    if op is None:
        return _not_found(request.match_info["upload_id"])
    return answer(op.view())

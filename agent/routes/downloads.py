"""POST /v1/downloads, GET /v1/downloads/{upload_id}, POST /v1/downloads/{upload_id}/cancel:
an image downloaded from an https URL into staging for an upload (agent/downloader.py does
it). A URL this agent will not fetch is refused at once (400 naming the host and the
setting), before any connection is made."""

from __future__ import annotations

from aiohttp import web

from agent.appkeys import DOWNLOADER
from agent.download_policy import DownloadRefused
from agent.routes.responses import answer, json_error
from agent.routes.upload_ops import op_routes
from shared.error_slugs import ErrorSlug
from shared.messages.downloads import DownloadRequest
from shared.validation import parse


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


get_download, cancel_download = op_routes(DOWNLOADER, "download", ErrorSlug.DOWNLOAD_NOT_FOUND)

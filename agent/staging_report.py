"""GET /v1/staging: what this agent keeps on its staging disk, for the coordinator to
check against its database (files whose upload or sync task is gone are removed)."""

from __future__ import annotations

import re
import time

from aiohttp import web

from agent.appkeys import RECEIVES, STAGING

UPLOAD_FILE = re.compile(r"^upload-([0-9]+)-[0-9a-f]{8}\.(qcow2|raw|vmdk)(\.part)?$")


async def list_staging(request: web.Request) -> web.Response:
    now = time.time()
    uploads: dict[int, float] = {}  # upload id -> age of its newest file, seconds (this host's clock)
    for path in request.app[STAGING].root.iterdir():
        match = UPLOAD_FILE.match(path.name)
        if match is None:
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        upload_id = int(match.group(1))
        uploads[upload_id] = min(age, uploads.get(upload_id, age))
    receives = []
    for task_id, receive in sorted(request.app[RECEIVES].receives.items()):
        try:
            age = now - receive.state_path.stat().st_mtime  # saved whenever the copy moves on
        except FileNotFoundError:
            age = 0.0
        receives.append({"task_id": task_id, "age_seconds": round(age, 1)})
    return web.json_response(
        {
            "uploads": [{"upload_id": k, "age_seconds": round(v, 1)} for k, v in sorted(uploads.items())],
            "receives": receives,
        }
    )

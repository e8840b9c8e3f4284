"""GET /v1/staging: what this agent keeps on its staging disk, for the coordinator to
check against its database (files whose upload or sync task is gone are removed)."""

from __future__ import annotations

import time

from aiohttp import web

from agent.appkeys import RECEIVES, STAGING
from agent.routes.responses import answer
from shared.messages.uploads import StagedReceive, StagedUpload, StagingReport


async def list_staging(request: web.Request) -> web.Response:
    now = time.time()  # ages, not times: the coordinator's clock may differ from ours
    uploads = [
        StagedUpload(upload_id=upload_id, age_seconds=round(now - mtime, 1))
        for upload_id, mtime in sorted(request.app[STAGING].upload_mtimes().items())
    ]
    receives: list[StagedReceive] = []
    for receive in request.app[RECEIVES].receives.values():
        try:
            age = now - receive.state_path.stat().st_mtime  # saved whenever the copy moves on
        except FileNotFoundError:
            age = 0.0
        receives.append(StagedReceive(receive.rec.task_id, receive.rec.task_uid, round(age, 1)))
    return answer(StagingReport(uploads=uploads, receives=receives))

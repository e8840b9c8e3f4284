"""GET /health (for anyone: how this agent, its PVE and its staging are) and GET /v1/whoami
(lets a caller check its credential, and the agent's identity, without side effects)."""

from __future__ import annotations

import shutil
import time

from aiohttp import web

from agent.appkeys import CONFIG, PVE, RECEIVES, SENDER, STAGING, STARTED_AT, STARTED_WALL, TRANSFER_POLICY
from agent.routes.responses import answer
from shared.messages.health import AgentHealth, AgentIdentity, PveHealth, StagingHealth, TransferHealth
from shared.version import VERSION


async def health(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    status = await request.app[PVE].status()
    try:
        free = shutil.disk_usage(config.staging_dir).free
    except OSError:
        free = 0
    policy = request.app[TRANSFER_POLICY]
    return answer(
        AgentHealth(
            node=config.node_name,
            cluster=status.cluster_name,
            version=VERSION,
            started_at=request.app[STARTED_WALL],
            uptime_seconds=round(time.monotonic() - request.app[STARTED_AT], 1),
            pve=PveHealth(ok=status.ok, version=status.version, error=status.error),
            staging=StagingHealth(
                dir=str(config.staging_dir),
                free_bytes=free,
                used_bytes=request.app[STAGING].used_bytes(),
                budget_bytes=config.budget.limit(request.app[STAGING].filesystem_bytes()),
            ),
            transfers=TransferHealth(
                inbound=request.app[RECEIVES].inbound,
                outbound=request.app[SENDER].outbound,
                registered=policy.tickets is not None,
                data_plane=policy.data_plane,
            ),
        )
    )


async def whoami(request: web.Request) -> web.Response:
    return answer(AgentIdentity(node=request.app[CONFIG].node_name, version=VERSION))

"""/healthz (the process answers) and /readyz (it can do its job); no token needed."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select, text

from coordinator.agents.registry import is_live
from coordinator.appkeys import CONFIG, DB, ENGINE, STARTED_AT
from coordinator.db.migrate import SCHEMA_HEAD, current_revision
from coordinator.db.models import Agent, PveCluster, PveNode
from coordinator.db.types import utcnow
from shared.version import VERSION


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "status": "ok",
            "version": VERSION,
            "uptime_seconds": round(time.monotonic() - request.app[STARTED_AT], 1),
        }
    )


async def readiness(app: web.Application) -> tuple[bool, dict[str, Any], list[str]]:
    checks: dict[str, Any] = {}
    problems: list[str] = []
    try:
        async with app[DB]() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", with the reason shown
        checks["database"] = "error"
        problems.append(f"database unreachable: {exc.__class__.__name__}: {exc}"[:300])
        return False, checks, problems

    revision = await current_revision(app[ENGINE])
    head = SCHEMA_HEAD
    checks["schema"] = {"current": revision, "head": head}
    if revision != head:
        problems.append(f"database schema is at {revision}, code needs {head}: run migrate")

    timeout = timedelta(seconds=app[CONFIG].agent_timeout)
    now = utcnow()
    clusters: dict[str, Any] = {}
    async with app[DB]() as session:
        for cluster in await session.scalars(select(PveCluster)):
            nodes = (
                await session.scalars(
                    select(PveNode).where(PveNode.cluster_id == cluster.id, PveNode.status == "online")
                )
            ).all()
            agents = {
                a.node_id: a
                for a in await session.scalars(select(Agent).where(Agent.node_id.in_([n.id for n in nodes])))
            }
            missing = [
                n.node_name for n in nodes if n.id not in agents or not is_live(agents[n.id], now, timeout)
            ]
            clusters[cluster.cluster_name] = {
                "inventory": "ok" if cluster.last_sync_at else "never read",
                "online_nodes": len(nodes),
                "live_agents": len(nodes) - len(missing),
            }
            if cluster.last_sync_at is None:
                problems.append(f"cluster {cluster.cluster_name}: inventory never read")
            if missing and app[CONFIG].ready_requires_agents:
                problems.append(f"cluster {cluster.cluster_name}: no live agent on {', '.join(missing)}")
    checks["clusters"] = clusters
    if not clusters and app[CONFIG].ready_requires_agents:
        problems.append("no PVE cluster registered yet")
    return not problems, checks, problems


async def readyz(request: web.Request) -> web.Response:
    ok, checks, problems = await readiness(request.app)
    body = {"status": "ready" if ok else "not_ready", "checks": checks, "problems": problems}
    return web.json_response(body, status=200 if ok else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

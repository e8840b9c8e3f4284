"""GET /agents: every node's agent, its address, version, last heartbeat and liveness."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from coordinator.agents.registry import is_live
from coordinator.api import inventory_reads
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import AgentRow
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.api.timefmt import UtcTime
from coordinator.appkeys import CONFIG, READS
from coordinator.db.types import utcnow
from shared.error_slugs import ErrorSlug
from shared.validation import Model

routes = Routes("agents")


class AgentQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only agents of this cluster's nodes")] | None = None
    live: Annotated[bool, Meta(description="only live (true) or only silent (false) agents")] | None = None


class AgentOut(Model):
    id: int
    node_id: int | None
    node_name: str
    cluster_id: int | None
    cluster_name: str
    url: str
    version: str
    live: bool
    last_heartbeat_at: UtcTime | None
    started_at: UtcTime | None
    pve_ok: bool
    pve_error: str | None
    staging_free_bytes: int


def _out(a: AgentRow, live: bool) -> AgentOut:
    return AgentOut(
        id=a.id,
        node_id=a.node_id,
        node_name=a.node_name,
        cluster_id=a.cluster_id,
        cluster_name=a.cluster_name,
        url=a.url,
        version=a.version,
        live=live,
        last_heartbeat_at=a.last_heartbeat_at,
        started_at=a.started_at,
        pve_ok=a.pve_ok,
        pve_error=a.pve_error,
        staging_free_bytes=a.staging_free_bytes,
    )


@routes.get("/agents", role="viewer", query=AgentQuery, response=Page[AgentOut])
async def list_agents(call: Call) -> web.Response:
    """Agents that registered, newest first, with whether each is live now."""
    q: AgentQuery = call.query
    reads = call.app[READS]
    timeout, now = timedelta(seconds=call.app[CONFIG].agent_timeout), utcnow()
    if q.live is not None:
        # Liveness is a function of time; filter after reading (agents are few: one per node).
        matching = [
            a
            for a in await inventory_reads.all_agents(reads, q.cluster_id)
            if is_live(a.heartbeats, now, timeout) == q.live
        ]
        start = (q.page - 1) * q.page_size
        items = [_out(a, q.live) for a in matching[start : start + q.page_size]]
        return ok(Page(total=len(matching), page=q.page, page_size=q.page_size, list=items))
    total, rows = await inventory_reads.agents(reads, q.cluster_id, q.page, q.page_size)
    items = [_out(a, is_live(a.heartbeats, now, timeout)) for a in rows]
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=items))


@routes.get("/agents/{id}", role="viewer", response=AgentOut, errors=(404,))
async def get_agent(call: Call) -> web.Response:
    """One agent."""
    row = await inventory_reads.agent(call.app[READS], call.path["id"])
    if row is None:
        raise not_found(ErrorSlug.AGENT_NOT_FOUND, call.path["id"])
    return ok(_out(row, is_live(row.heartbeats, utcnow(), timedelta(seconds=call.app[CONFIG].agent_timeout))))

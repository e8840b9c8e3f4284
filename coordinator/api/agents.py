"""GET /agents: every node's agent, its address, version, last heartbeat and liveness."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from msgspec import Meta
from sqlalchemy import select

from coordinator.agents.registry import is_live
from coordinator.api.errors import not_found
from coordinator.api.pagination import Page, PageQuery, paginate
from coordinator.api.routing import Call, Routes
from coordinator.api.timefmt import UtcTime
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import Agent, PveNode
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


def _out(agent: Agent, cluster_id: int | None, live: bool) -> AgentOut:
    return AgentOut(
        id=agent.id,
        node_id=agent.node_id,
        node_name=agent.node_name,
        cluster_id=cluster_id,
        cluster_name=agent.cluster_name,
        url=agent.url,
        version=agent.version,
        live=live,
        last_heartbeat_at=agent.last_heartbeat_at,
        started_at=agent.started_at,
        pve_ok=agent.pve_ok,
        pve_error=agent.pve_error,
        staging_free_bytes=agent.staging_free_bytes,
    )


def _stmt():  # type: ignore[no-untyped-def]
    return select(Agent, PveNode.cluster_id).outerjoin(PveNode, PveNode.id == Agent.node_id)


@routes.get("/agents", role="viewer", query=AgentQuery, response=Page[AgentOut])
async def list_agents(call: Call) -> Page[AgentOut]:
    """Agents that registered, newest first, with whether each is live now."""
    q: AgentQuery = call.query
    timeout = timedelta(seconds=call.app[CONFIG].agent_timeout)
    now = utcnow()
    stmt = _stmt().order_by(Agent.id.desc())
    if q.cluster_id is not None:
        stmt = stmt.where(PveNode.cluster_id == q.cluster_id)
    if q.live is not None:
        # Liveness is a function of time; filter after loading (agents are few: one per node).
        async with call.app[DB]() as session:
            rows = (await session.execute(stmt)).all()
        matching = [r for r in rows if is_live(r[0], now, timeout) == q.live]
        start = (q.page - 1) * q.page_size
        page = matching[start : start + q.page_size]
        items = [_out(a, cid, q.live) for a, cid in page]
        return Page(total=len(matching), page=q.page, page_size=q.page_size, list=items)
    async with call.app[DB]() as session:
        total, rows = await paginate(session, stmt, q)
    items = [_out(a, cid, is_live(a, now, timeout)) for a, cid in rows]
    return Page(total=total, page=q.page, page_size=q.page_size, list=items)


@routes.get("/agents/{id}", role="viewer", response=AgentOut, errors=(404,))
async def get_agent(call: Call) -> AgentOut:
    """One agent."""
    timeout = timedelta(seconds=call.app[CONFIG].agent_timeout)
    async with call.app[DB]() as session:
        row = (await session.execute(_stmt().where(Agent.id == call.path["id"]))).first()
    if row is None:
        raise not_found(ErrorSlug.AGENT_NOT_FOUND, call.path["id"])
    return _out(row[0], row[1], is_live(row[0], utcnow(), timeout))

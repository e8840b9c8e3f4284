"""GET /agents: every node's agent, its address, version, last heartbeat and liveness."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from coordinator.api import inventory_reads
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import AgentOut, Liveness
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, READS
from coordinator.db.types import utcnow
from shared.error_slugs import ErrorSlug

routes = Routes("agents")


class AgentQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only agents of this cluster's nodes")] | None = None
    live: Annotated[bool, Meta(description="only live (true) or only silent (false) agents")] | None = None


def _live(call: Call) -> Liveness:
    return Liveness(utcnow(), timedelta(seconds=call.app[CONFIG].agent_timeout))


@routes.get("/agents", role="viewer", query=AgentQuery, response=Page[AgentOut])
async def list_agents(call: Call) -> web.Response:
    """Agents that registered, newest first, with whether each is live now."""
    q: AgentQuery = call.query
    reads, live = call.app[READS], _live(call)
    if q.live is not None:
        # Liveness is a function of time; filter after reading (agents are few: one per node).
        matching = [
            a for a in await inventory_reads.all_agents(reads, q.cluster_id, live) if a.live == q.live
        ]
        start = (q.page - 1) * q.page_size
        items = matching[start : start + q.page_size]
        return ok(Page(total=len(matching), page=q.page, page_size=q.page_size, list=items))
    total, rows = await inventory_reads.agents(reads, q.cluster_id, q.page, q.page_size, live)
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=rows))


@routes.get("/agents/{id}", role="viewer", response=AgentOut, errors=(404,))
async def get_agent(call: Call) -> web.Response:
    """One agent."""
    agent = await inventory_reads.agent(call.app[READS], call.path["id"], _live(call))
    if agent is None:
        raise not_found(ErrorSlug.AGENT_NOT_FOUND, call.path["id"])
    return ok(agent)

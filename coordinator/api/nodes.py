"""GET /nodes (filter cluster_id) and GET /nodes/{id}."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from msgspec import Meta
from sqlalchemy import select

from coordinator.agents.registry import is_live
from coordinator.api.errors import not_found
from coordinator.api.pagination import Page, PageQuery, paginate
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import Agent, PveCluster, PveNode
from coordinator.db.types import utcnow
from shared.error_slugs import ErrorSlug
from shared.validation import Model

routes = Routes("inventory")


class NodeQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only nodes of this cluster")] | None = None


class NodeOut(Model):
    id: int
    node_name: str
    cluster_id: int
    cluster_name: str
    ip_address: str
    status: str
    agent_live: bool


def _stmt():  # type: ignore[no-untyped-def]
    return (
        select(PveNode, PveCluster.cluster_name, Agent)
        .join(PveCluster, PveCluster.id == PveNode.cluster_id)
        .outerjoin(Agent, Agent.node_id == PveNode.id)
    )


def _out(call: Call, node: PveNode, cluster_name: str, agent: Agent | None) -> NodeOut:
    timeout = timedelta(seconds=call.app[CONFIG].agent_timeout)
    return NodeOut(
        id=node.id,
        node_name=node.node_name,
        cluster_id=node.cluster_id,
        cluster_name=cluster_name,
        ip_address=node.ip_address,
        status=node.status,
        agent_live=agent is not None and is_live(agent, utcnow(), timeout),
    )


@routes.get("/nodes", role="viewer", query=NodeQuery, response=Page[NodeOut])
async def list_nodes(call: Call) -> Page[NodeOut]:
    """Nodes of the registered clusters, newest first."""
    q: NodeQuery = call.query
    stmt = _stmt().order_by(PveNode.id.desc())
    if q.cluster_id is not None:
        stmt = stmt.where(PveNode.cluster_id == q.cluster_id)
    async with call.app[DB]() as session:
        total, rows = await paginate(session, stmt, q)
    return Page(total=total, page=q.page, page_size=q.page_size, list=[_out(call, *r) for r in rows])


@routes.get("/nodes/{id}", role="viewer", response=NodeOut, errors=(404,))
async def get_node(call: Call) -> NodeOut:
    """One node."""
    async with call.app[DB]() as session:
        row = (await session.execute(_stmt().where(PveNode.id == call.path["id"]))).first()
    if row is None:
        raise not_found(ErrorSlug.NODE_NOT_FOUND, call.path["id"])
    return _out(call, *row)

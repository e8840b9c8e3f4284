"""GET /nodes (filter cluster_id) and GET /nodes/{id}."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from coordinator.agents.registry import is_live
from coordinator.api import inventory_reads
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import NodeRow
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, READS
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


def _out(node: NodeRow, now: datetime, timeout: timedelta) -> NodeOut:
    return NodeOut(
        id=node.id,
        node_name=node.node_name,
        cluster_id=node.cluster_id,
        cluster_name=node.cluster_name,
        ip_address=node.ip_address,
        status=node.status,
        agent_live=node.agent_id is not None and is_live(node.heartbeats, now, timeout),
    )


@routes.get("/nodes", role="viewer", query=NodeQuery, response=Page[NodeOut])
async def list_nodes(call: Call) -> web.Response:
    """Nodes of the registered clusters, newest first."""
    q: NodeQuery = call.query
    total, rows = await inventory_reads.nodes(call.app[READS], q.cluster_id, q.page, q.page_size)
    timeout, now = timedelta(seconds=call.app[CONFIG].agent_timeout), utcnow()
    return ok(
        Page(total=total, page=q.page, page_size=q.page_size, list=[_out(r, now, timeout) for r in rows])
    )


@routes.get("/nodes/{id}", role="viewer", response=NodeOut, errors=(404,))
async def get_node(call: Call) -> web.Response:
    """One node."""
    row = await inventory_reads.node(call.app[READS], call.path["id"])
    if row is None:
        raise not_found(ErrorSlug.NODE_NOT_FOUND, call.path["id"])
    return ok(_out(row, utcnow(), timedelta(seconds=call.app[CONFIG].agent_timeout)))

"""GET /nodes (filter cluster_id) and GET /nodes/{id}."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from coordinator.api import inventory_reads
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import Liveness, NodeOut
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import CONFIG, READS
from coordinator.db.types import utcnow
from shared.error_slugs import ErrorSlug

routes = Routes("inventory")


class NodeQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only nodes of this cluster")] | None = None


def _live(call: Call) -> Liveness:
    return Liveness(utcnow(), timedelta(seconds=call.app[CONFIG].agent_timeout))


@routes.get("/nodes", role="viewer", query=NodeQuery, response=Page[NodeOut])
async def list_nodes(call: Call) -> web.Response:
    """Nodes of the registered clusters, newest first."""
    q: NodeQuery = call.query
    total, rows = await inventory_reads.nodes(call.app[READS], q.cluster_id, q.page, q.page_size, _live(call))
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=rows))


@routes.get("/nodes/{id}", role="viewer", response=NodeOut, errors=(404,))
async def get_node(call: Call) -> web.Response:
    """One node."""
    node = await inventory_reads.node(call.app[READS], call.path["id"], _live(call))
    if node is None:
        raise not_found(ErrorSlug.NODE_NOT_FOUND, call.path["id"])
    return ok(node)

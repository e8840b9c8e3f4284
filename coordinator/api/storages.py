"""GET /storages (filters cluster_id, node_id, shared) and GET /storages/{id}."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import Meta

from coordinator.api import inventory_reads
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import StorageOut
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import READS
from shared.error_slugs import ErrorSlug

routes = Routes("inventory")


class StorageQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only storages of this cluster")] | None = None
    node_id: Annotated[int, Meta(ge=1, description="only storages seen by this node")] | None = None
    shared: Annotated[bool, Meta(description="true/1: shared storages, false/0: local")] | None = None


@routes.get("/storages", role="viewer", query=StorageQuery, response=Page[StorageOut])
async def list_storages(call: Call) -> web.Response:
    """Storages, one row per (node, storage): a shared storage appears once per node."""
    q: StorageQuery = call.query
    total, rows = await inventory_reads.storages(
        call.app[READS], q.cluster_id, q.node_id, q.shared, q.page, q.page_size
    )
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=rows))


@routes.get("/storages/{id}", role="viewer", response=StorageOut, errors=(404,))
async def get_storage(call: Call) -> web.Response:
    """One storage row."""
    storage = await inventory_reads.storage(call.app[READS], call.path["id"])
    if storage is None:
        raise not_found(ErrorSlug.STORAGE_NOT_FOUND, call.path["id"])
    return ok(storage)

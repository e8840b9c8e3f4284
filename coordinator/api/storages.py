"""GET /storages (filters cluster_id, node_id, shared) and GET /storages/{id}."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import Meta

from coordinator.api import inventory_reads
from coordinator.api.errors import not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import StorageRow
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import READS
from shared.error_slugs import ErrorSlug
from shared.validation import Model

routes = Routes("inventory")


class StorageQuery(PageQuery):
    cluster_id: Annotated[int, Meta(ge=1, description="only storages of this cluster")] | None = None
    node_id: Annotated[int, Meta(ge=1, description="only storages seen by this node")] | None = None
    shared: Annotated[bool, Meta(description="true/1: shared storages, false/0: local")] | None = None


class StorageOut(Model):
    id: int
    storage_name: str
    type: str
    shared: bool
    content: str
    active: bool
    enabled: bool
    node_id: int
    node_name: str
    cluster_id: int
    total: int
    used: int
    avail: int


def _out(s: StorageRow) -> StorageOut:
    return StorageOut(
        id=s.id,
        storage_name=s.storage_name,
        type=s.type,
        shared=s.shared,
        content=s.content,
        active=s.active,
        enabled=s.enabled,
        node_id=s.node_id,
        node_name=s.node_name,
        cluster_id=s.cluster_id,
        total=s.total,
        used=s.used,
        avail=s.avail,
    )


@routes.get("/storages", role="viewer", query=StorageQuery, response=Page[StorageOut])
async def list_storages(call: Call) -> web.Response:
    """Storages, one row per (node, storage): a shared storage appears once per node."""
    q: StorageQuery = call.query
    total, rows = await inventory_reads.storages(
        call.app[READS], q.cluster_id, q.node_id, q.shared, q.page, q.page_size
    )
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=[_out(r) for r in rows]))


@routes.get("/storages/{id}", role="viewer", response=StorageOut, errors=(404,))
async def get_storage(call: Call) -> web.Response:
    """One storage row."""
    row = await inventory_reads.storage(call.app[READS], call.path["id"])
    if row is None:
        raise not_found(ErrorSlug.STORAGE_NOT_FOUND, call.path["id"])
    return ok(_out(row))

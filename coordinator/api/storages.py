"""GET /storages (filters cluster_id, node_id, shared) and GET /storages/{id}."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta
from sqlalchemy import select

from coordinator.api.errors import not_found
from coordinator.api.pagination import Page, PageQuery, paginate
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import DB
from coordinator.db.models import PveNode, PveStorage
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


def _out(storage: PveStorage, node_name: str) -> StorageOut:
    return StorageOut(
        id=storage.id,
        storage_name=storage.storage_name,
        type=storage.type,
        shared=storage.shared,
        content=storage.content,
        active=storage.active,
        enabled=storage.enabled,
        node_id=storage.node_id,
        node_name=node_name,
        cluster_id=storage.cluster_id,
        total=storage.total,
        used=storage.used,
        avail=storage.avail,
    )


def _stmt():  # type: ignore[no-untyped-def]
    return select(PveStorage, PveNode.node_name).join(PveNode, PveNode.id == PveStorage.node_id)


@routes.get("/storages", role="viewer", query=StorageQuery, response=Page[StorageOut])
async def list_storages(call: Call) -> Page[StorageOut]:
    """Storages, one row per (node, storage): a shared storage appears once per node."""
    q: StorageQuery = call.query
    stmt = _stmt().order_by(PveStorage.id.desc())
    if q.cluster_id is not None:
        stmt = stmt.where(PveStorage.cluster_id == q.cluster_id)
    if q.node_id is not None:
        stmt = stmt.where(PveStorage.node_id == q.node_id)
    if q.shared is not None:
        stmt = stmt.where(PveStorage.shared == q.shared)
    async with call.app[DB]() as session:
        total, rows = await paginate(session, stmt, q)
    return Page(total=total, page=q.page, page_size=q.page_size, list=[_out(*r) for r in rows])


@routes.get("/storages/{id}", role="viewer", response=StorageOut, errors=(404,))
async def get_storage(call: Call) -> StorageOut:
    """One storage row."""
    async with call.app[DB]() as session:
        row = (await session.execute(_stmt().where(PveStorage.id == call.path["id"]))).first()
    if row is None:
        raise not_found(ErrorSlug.STORAGE_NOT_FOUND, call.path["id"])
    return _out(*row)

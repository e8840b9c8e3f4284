"""Sync-task history for the API benchmark, written straight into the coordinator's database.

The schema is the coordinator's own (its migrations made it; the rows go through its
SQLAlchemy tables, so types and defaults are the real ones). The parents come from the
coordinator itself (the cluster, its nodes and storages from registering the emulated
cluster); this module adds one imported template (upload, primary instance) and then its
history: finished sync tasks from the first node to the others, in bulk inserts of
``BATCH`` rows (1M rows: 60-100 s on SQLite or MariaDB here).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import CursorResult, func, insert, select

from coordinator.db.models import (
    PveNode,
    PveStorage,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.db.session import create_engine
from coordinator.db.types import utcnow

BATCH = 10_000
TEMPLATE_NAME = "bench-history"
# Of every 20 tasks: 16 completed, 3 failed, 1 canceled (history: nothing active).
STATUS_CYCLE = ("completed",) * 16 + ("failed",) * 3 + ("canceled",)


@dataclass(frozen=True)
class Seeded:
    template_id: int
    tasks: int


@dataclass(frozen=True)
class _Node:
    id: int
    name: str


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def _template(url: str, cluster_id: int) -> int:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            nodes = (await conn.execute(select(PveNode.id, PveNode.node_name).order_by(PveNode.id))).all()
            storage = (
                await conn.execute(
                    select(PveStorage.id, PveStorage.storage_name).where(PveStorage.node_id == nodes[0].id)
                )
            ).first()
            assert storage is not None, "the registered cluster's first node has no storage"
            template_id = _new_id(
                await conn.execute(
                    insert(VmTemplate).values(
                        cluster_id=cluster_id,
                        template_name=TEMPLATE_NAME,
                        name_key=TEMPLATE_NAME,
                        creator="bench",
                    )
                )
            )
            upload_id = _new_id(
                await conn.execute(
                    insert(TemplateUpload).values(
                        template_id=template_id,
                        template_name=TEMPLATE_NAME,
                        cluster_id=cluster_id,
                        storage_id=storage.id,
                        storage_name=storage.storage_name,
                        storage_type="dir",
                        import_node_id=nodes[0].id,
                        import_node_name=nodes[0].node_name,
                        file_name="bench.qcow2",
                        file_size=1 << 30,
                        status="imported",
                        vmid=9000,
                    )
                )
            )
            await conn.execute(
                insert(TemplateInstance).values(
                    template_id=template_id,
                    upload_id=upload_id,
                    cluster_id=cluster_id,
                    node_id=nodes[0].id,
                    node_name=nodes[0].node_name,
                    storage_id=storage.id,
                    storage_name=storage.storage_name,
                    vmid=9000,
                    status="available",
                    is_primary=True,
                )
            )
        return template_id
    finally:
        await engine.dispose()


def _rows(
    template_id: int, upload_id: int, cluster_id: int, nodes: list[_Node], first: int, count: int
) -> list[dict]:  # type: ignore[type-arg]
    start = utcnow() - timedelta(days=365)
    source, targets = nodes[0], nodes[1:]
    rows = []
    for i in range(first, first + count):
        target = targets[i % len(targets)]
        status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
        began = start + timedelta(seconds=i)
        rows.append(
            {
                "uid": secrets.token_hex(16),
                "template_id": template_id,
                "upload_id": upload_id,
                "cluster_id": cluster_id,
                "source_node_id": source.id,
                "source_node_name": source.name,
                "target_node_id": target.id,
                "target_node_name": target.name,
                "storage_name": "local",
                "status": status,
                "progress": 100 if status == "completed" else 40,
                "bytes_total": 1 << 30,
                "bytes_done": 1 << 30 if status == "completed" else 400 << 20,
                "attempts": 1,
                "sync_start_time": began,
                "sync_end_time": began + timedelta(seconds=9),
                "error_message": "target node unreachable" if status == "failed" else None,
                "created_at": began,
                "updated_at": began,
                "creator": "bench",
            }
        )
    return rows


async def _top_up(url: str, template_id: int, total: int) -> int:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            have = int(await conn.scalar(select(func.count()).select_from(TemplateSyncTask)) or 0)
            template = (
                await conn.execute(
                    select(TemplateUpload.id, TemplateUpload.cluster_id).where(
                        TemplateUpload.template_id == template_id
                    )
                )
            ).one()
            nodes = [
                _Node(r.id, r.node_name)
                for r in await conn.execute(select(PveNode.id, PveNode.node_name).order_by(PveNode.id))
            ]
        while have < total:
            count = min(BATCH, total - have)
            async with engine.begin() as conn:
                await conn.execute(
                    insert(TemplateSyncTask),
                    _rows(template_id, template.id, template.cluster_id, nodes, have, count),
                )
            have += count
        return have
    finally:
        await engine.dispose()


def seed_template(url: str, cluster_id: int) -> int:
    """One imported template of the registered cluster (its primary instance on the first node)."""
    return asyncio.run(_template(url, cluster_id))


def top_up(url: str, template_id: int, total: int) -> Seeded:
    """Insert finished sync tasks of ``template_id`` until the table holds ``total``."""
    return Seeded(template_id, asyncio.run(_top_up(url, template_id, total)))

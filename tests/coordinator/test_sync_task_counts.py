"""The sync-task list's exact total comes from counts the database keeps (triggers on
template_sync_task, coordinator/db/sync_task_counts.py): they must match a real COUNT after
every kind of write, on both databases, in a database built by the migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import product
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db import sync_task_counts
from coordinator.db.migrate import upgrade_to_head
from coordinator.db.models import PveCluster, TemplateSyncTask, VmTemplate
from coordinator.db.session import create_engine, session_factory
from tests.support import mariadb

STATUSES = ("pending", "syncing", "importing", "completed", "failed", "canceled")


@pytest.fixture(params=["sqlite", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database migrated to head."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'counts.db'}"
        upgrade_to_head(url)
        yield url
        return
    request.getfixturevalue("mariadb_url")  # skipped where MariaDB is not running
    name, url = mariadb.create_database()
    try:
        upgrade_to_head(url)
        yield url
    finally:
        mariadb.drop_database(name)


def _task(template_id: int, n: int, status: str) -> TemplateSyncTask:
    return TemplateSyncTask(
        template_id=template_id,
        upload_id=1,
        cluster_id=1,
        source_node_id=1,
        source_node_name="n1",
        target_node_id=2,
        target_node_name="n2",
        storage_name="local",
        status=status,
        creator=f"t{n}",
    )


async def _assert_exact(session: AsyncSession, templates: list[int]) -> None:
    for template_id, status in product([None, *templates], [None, *STATUSES]):
        real = select(func.count()).select_from(TemplateSyncTask)
        if template_id is not None:
            real = real.where(TemplateSyncTask.template_id == template_id)
        if status is not None:
            real = real.where(TemplateSyncTask.status == status)
        kept = await sync_task_counts.total(session, template_id, status)
        assert kept == await session.scalar(real), (template_id, status)


async def _writes(url: str) -> None:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            cluster = PveCluster(cluster_name="c", api_url="https://pve:8006", token_id="t", token_secret="s")
            session.add(cluster)
            await session.flush()
            one, two = (VmTemplate(cluster_id=cluster.id, template_name=n, name_key=n) for n in ("a", "b"))
            session.add_all([one, two])
            await session.flush()
            templates = [one.id, two.id]
            session.add_all(_task(templates[i % 2], i, STATUSES[i % 3]) for i in range(12))
            await session.commit()
            await _assert_exact(session, templates)

            # as the sync job and the API write statuses: ORM updates and bulk UPDATEs
            task = await session.scalar(select(TemplateSyncTask).where(TemplateSyncTask.status == "pending"))
            assert task is not None
            task_id = task.id
            task.status = "syncing"
            task.progress = 50  # a write that leaves the status alone changes no count
            await session.commit()
            await session.execute(
                update(TemplateSyncTask).where(TemplateSyncTask.status == "syncing").values(status="failed")
            )
            moved = update(TemplateSyncTask).where(TemplateSyncTask.id == task_id)
            await session.execute(moved.values(template_id=templates[1]))
            await session.commit()
            await _assert_exact(session, templates)

            # a rolled-back write leaves the counts as they were
            await session.execute(update(TemplateSyncTask).values(status="canceled"))
            await session.rollback()
            await _assert_exact(session, templates)

            await session.execute(delete(TemplateSyncTask).where(TemplateSyncTask.status == "failed"))
            await session.delete(await session.scalar(select(TemplateSyncTask).limit(1)))
            await session.commit()
            await _assert_exact(session, templates)
            assert await sync_task_counts.total(session) == await session.scalar(
                select(func.count()).select_from(TemplateSyncTask)
            )
    finally:
        await engine.dispose()


@pytest.mark.mariadb
def test_kept_counts_match_a_count_after_inserts_status_changes_and_deletes(database: str) -> None:
    asyncio.run(_writes(database))

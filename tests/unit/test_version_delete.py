"""A version's delete against a migrated database (coordinator/version_delete.py): each
refusal leaves everything as it was; of two deletes at once one starts it; it cancels only
that version's pending copies; what is left of the version goes with it and its number is
never given again. The unique keys are per version (one instance per template, version and
node; one active sync task per template, version and target)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator import version_delete
from coordinator.db.models import (
    Clone,
    PveCluster,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.errors import Conflict, NotFound
from coordinator.states import instance, sync_task, template, upload
from coordinator.states.instance import InstanceStatus
from coordinator.states.upload import UploadStatus
from coordinator.template_delete import DeleteJobs
from tests.support.db import clone_row, task_row

NAMES = itertools.count(1)


async def _template(db: async_sessionmaker[AsyncSession], versions: int = 2) -> int:
    """A template with ``versions`` imported versions (the newest current), no VMs."""
    n = next(NAMES)
    async with db() as session:
        cluster = PveCluster(cluster_name=f"v{n}", api_url="https://pve", token_id="t", token_secret="s")
        session.add(cluster)
        await session.flush()
        row = template.new_template(f"v{n}", cluster_id=cluster.id, current_version=versions)
        session.add(row)
        await session.flush()
        for version in range(1, versions + 1):
            up = upload.new_upload(
                "me",
                60,
                template_id=row.id,
                version=version,
                template_name=row.template_name,
                cluster_id=cluster.id,
                storage_id=1,
                storage_name="local",
                storage_type="dir",
                import_node_id=1,
                import_node_name="n1",
                file_name=f"v{version}.raw",
            )
            session.add(up)
            await session.flush()
            assert await upload.stored(session, up.id, staged_name="", size=1, sha256="a", virtual_size=1)
            assert await upload.start_import(session, up.id)
            assert await upload.imported(session, up.id, 9000 + version)
        await session.commit()
        return row.id


async def _upload_of(db: async_sessionmaker[AsyncSession], template_id: int, version: int) -> TemplateUpload:
    async with db() as session:
        found = await session.scalar(
            select(TemplateUpload).where(
                TemplateUpload.template_id == template_id, TemplateUpload.version == version
            )
        )
    assert found is not None
    return found


async def _task(
    db: async_sessionmaker[AsyncSession], template_id: int, version: int, node: int = 2, **fields: Any
) -> int:
    up = await _upload_of(db, template_id, version)
    async with db() as session:
        task = task_row(up, node, **fields)
        session.add(task)
        await session.commit()
        return task.id


async def _clone(db: async_sessionmaker[AsyncSession], template_id: int, version: int, **fields: Any) -> int:
    up = await _upload_of(db, template_id, version)
    async with db() as session:
        row = clone_row(up, f"c{next(NAMES)}", **fields)
        session.add(row)
        await session.commit()
        return row.id


async def _refused(db: async_sessionmaker[AsyncSession], template_id: int, version: int, slug: str) -> str:
    with pytest.raises(Conflict) as refused:
        await version_delete.start(db, template_id, version, None)
    assert refused.value.error == slug
    assert (await _upload_of(db, template_id, version)).status == UploadStatus.IMPORTED  # nothing changed
    return refused.value.message


async def test_the_current_version_is_refused(db: async_sessionmaker[AsyncSession]) -> None:
    template_id = await _template(db)
    assert "current version" in await _refused(db, template_id, 2, "version_current")
    with pytest.raises(NotFound):
        await version_delete.start(db, template_id, 7, None)


async def test_a_version_whose_copy_runs_or_clone_is_made_is_refused(
    db: async_sessionmaker[AsyncSession],
) -> None:
    template_id = await _template(db)
    task_id = await _task(db, template_id, 1)
    async with db() as session:
        assert await sync_task.claim(session, task_id, 1, "n1", "n1")  # pending -> syncing
        await session.commit()
    assert f"sync task {task_id} of version 1" in await _refused(db, template_id, 1, "sync_running")
    async with db() as session:
        await sync_task.cancel(session, task_id, "test")
        await session.commit()
    clone_id = await _clone(db, template_id, 1)  # pending: under way
    assert f"clone {clone_id} of version 1" in await _refused(db, template_id, 1, "clone_running")


async def test_a_version_a_linked_clone_uses_is_refused_naming_it(
    db: async_sessionmaker[AsyncSession],
) -> None:
    template_id = await _template(db, versions=3)
    used = await _clone(db, template_id, 1, linked=True, vmid=4242)
    await _clone(db, template_id, 2, linked=True, vmid=4343)  # another version's: not named
    async with db() as session:
        await session.execute(Clone.__table__.update().values(status="completed"))
        await session.commit()
    with pytest.raises(Conflict) as refused:
        await version_delete.start(db, template_id, 1, None)
    assert refused.value.error == "has_linked_clones"
    assert refused.value.extra["clones"] == [
        {"clone_id": used, "vmid": 4242, "name": refused.value.extra["clones"][0]["name"], "node_name": "n1"}
    ]

    async def in_pve(cluster_id: int) -> set[int]:  # the clone's VM was destroyed in PVE
        return {4343}

    assert await version_delete.start(db, template_id, 1, in_pve) == (await _upload_of(db, template_id, 1)).id


async def test_one_of_two_deletes_starts_it_and_only_that_versions_copies_stop(
    db: async_sessionmaker[AsyncSession],
) -> None:
    template_id = await _template(db, versions=3)
    old_task, other_task = await _task(db, template_id, 1), await _task(db, template_id, 3)
    async with db() as session:  # a failed copy of version 1 left an instance without a VM
        session.add(
            instance.new_instance(
                InstanceStatus.PENDING,
                template_id=template_id,
                version=1,
                upload_id=(await _upload_of(db, template_id, 1)).id,
                cluster_id=1,
                node_id=2,
                node_name="n2",
                storage_id=1,
                storage_name="local",
                sync_task_id=old_task,
            )
        )
        await session.commit()
    first, second = await asyncio.gather(
        version_delete.start(db, template_id, 1, None), version_delete.start(db, template_id, 1, None)
    )
    assert first == second
    async with db() as session:
        statuses = dict((await session.execute(select(TemplateSyncTask.id, TemplateSyncTask.status))).all())
    assert (statuses[old_task], statuses[other_task]) == ("canceled", "pending")
    outcome = await version_delete.attempt(db, DeleteJobs(db, None), first)  # type: ignore[arg-type]
    assert outcome.done, outcome  # nothing on any node: no agent is asked
    async with db() as session:
        assert (await session.get(TemplateUpload, first)).status == UploadStatus.DELETED  # type: ignore[union-attr]
        left = await session.scalars(
            select(TemplateInstance.version).where(TemplateInstance.template_id == template_id)
        )
        assert list(left) == []
        tasks = await session.scalars(
            select(TemplateSyncTask.version).where(TemplateSyncTask.template_id == template_id)
        )
        assert list(tasks) == [3]
    with pytest.raises(NotFound):  # gone: a second delete finds nothing
        await version_delete.start(db, template_id, 1, None)


async def test_the_unique_keys_are_per_version(db: async_sessionmaker[AsyncSession]) -> None:
    template_id = await _template(db)
    await _task(db, template_id, 1, node=5)
    await _task(db, template_id, 2, node=5)  # another version to the same node: allowed
    with pytest.raises(IntegrityError):
        await _task(db, template_id, 2, node=5)
    async with db() as session:
        template_row = await session.get(VmTemplate, template_id)
        assert template_row is not None and template_row.current_version == 2
        assert not await template.version_available(session, template_id, 1)  # never moves back
        assert await template.version_available(session, template_id, 3)
        await session.rollback()

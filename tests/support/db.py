"""Direct database access for tests: seeding rows and checking that nothing was left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.migrate import upgrade_to_head
from coordinator.db.models import Clone, TemplateSyncTask, TemplateUpload, VmTemplate
from coordinator.db.session import create_engine, session_factory
from coordinator.states import clone as clone_states
from coordinator.states import sync_task
from coordinator.states import template as template_states
from coordinator.states import upload as upload_states
from tests.support import mariadb

T = TypeVar("T")


def with_session(url: str, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> str:
    """The URL of a database at the schema's head, for a module's fixture parametrised over
    "sqlite" (a file of its own) and "mariadb" (a database of its own, dropped at the end)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(name) / f'{name}.db'}"
    else:
        request.getfixturevalue("mariadb_url")
        db_name, url = mariadb.create_database()
        request.addfinalizer(lambda: mariadb.drop_database(db_name))
    upgrade_to_head(url)
    return url


def upload_row(template: VmTemplate, **fields: Any) -> TemplateUpload:
    """An upload of ``template`` streaming to node 1 ("n1"), storage "local"; the caller adds it."""
    values: dict[str, Any] = {
        "template_id": template.id,
        "template_name": template.template_name,
        "cluster_id": template.cluster_id,
        "storage_id": 1,
        "storage_name": "local",
        "storage_type": "dir",
        "import_node_id": 1,
        "import_node_name": "n1",
        "file_name": "x.qcow2",
    }
    return upload_states.new_upload("me", 60, **(values | fields))


def task_row(upload: TemplateUpload, node: int, **fields: Any) -> TemplateSyncTask:
    """A pending sync task of ``upload`` (its template and version) from node 1 ("n1") to node
    ``node`` ("n<node>"), on storage "local"; the caller adds it."""
    assert upload.template_id is not None
    return sync_task.new_task(
        template_id=upload.template_id,
        version=upload.version,
        upload_id=upload.id,
        cluster_id=upload.cluster_id,
        source_node_id=1,
        source_node_name="n1",
        target_node_id=node,
        target_node_name=f"n{node}",
        storage_name="local",
        **fields,
    )


def clone_row(upload: TemplateUpload, name: str, **fields: Any) -> Clone:
    """A pending clone of ``upload``'s version on node 1 ("n1"), storage "local"; the caller adds it."""
    assert upload.template_id is not None
    values: dict[str, Any] = {
        "template_id": upload.template_id,
        "version": upload.version,
        "upload_id": upload.id,
        "cluster_id": upload.cluster_id,
        "node_id": 1,
        "node_name": "n1",
        "source_node_id": 1,
        "source_node_name": "n1",
        "storage_name": "local",
        "name": name,
        "vm_config": "{}",
    }
    return clone_states.new_clone(waits_for_sync=False, **(values | fields))


async def template_with_versions(
    session: AsyncSession, name: str, cluster_id: int, versions: int = 1
) -> tuple[VmTemplate, list[TemplateUpload]]:
    """A template and the uploads of its versions 1..``versions`` (uploading), flushed."""
    template = template_states.new_template(name, cluster_id=cluster_id)
    session.add(template)
    await session.flush()
    uploads = [upload_row(template, version=v) for v in range(1, versions + 1)]
    session.add_all(uploads)
    await session.flush()
    return template, uploads

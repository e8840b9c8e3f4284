"""A cascade delete the job engine gave up on: failed with the reason, its template still
`deleting` and showing why; asking for the cascade again restarts it. On the real schema
(SQLite, migrated to head); the engine's path to give_up is covered by test_job_limits.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.api.templates import deletion_of_row
from coordinator.db.migrate import upgrade_to_head
from coordinator.db.models import PveCluster, TemplateDeletion, VmTemplate
from coordinator.db.session import create_engine, session_factory
from coordinator.jobs.engine import OWNER
from coordinator.template_delete import DeleteJobs, start_cascade

REASON = "gave up after 5 unexpected errors over 3 min; last: KeyError: 'removed'"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'coordinator.db'}"
    await asyncio.to_thread(upgrade_to_head, url)  # it runs its own event loop
    engine = create_engine(url)
    yield session_factory(engine)
    await engine.dispose()


async def _template(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as session:
        cluster = PveCluster(cluster_name="c", api_url="https://pve:8006", token_id="t", token_secret="s")
        session.add(cluster)
        await session.flush()
        template = VmTemplate(cluster_id=cluster.id, template_name="tpl", name_key="tpl")
        session.add(template)
        await session.commit()
        return template.id


async def test_a_given_up_delete_stays_visible_with_its_reason_and_restarts_when_asked_again(
    db: async_sessionmaker[AsyncSession],
) -> None:
    template_id = await _template(db)
    started = await start_cascade(db, template_id, "alice", lease=30)
    assert started.claimed

    # give_up asks no agent: none is needed to fail the job
    await DeleteJobs(db, agents=None).give_up(started.deletion_id, REASON)  # type: ignore[arg-type]
    async with db() as session:
        template = await session.get(VmTemplate, template_id)
        deletion = await session.get(TemplateDeletion, started.deletion_id)
    assert template is not None and template.status == "deleting"
    shown = deletion_of_row(deletion)
    assert shown is not None and shown.status == "failed"
    assert shown.reason == f"{REASON}; ask for the cascade delete again to retry"

    again = await start_cascade(db, template_id, "bob", lease=30)
    assert again == started.__class__(started.deletion_id, claimed=True)
    async with db() as session:
        deletion = await session.get(TemplateDeletion, started.deletion_id)
    assert deletion is not None
    assert (deletion.status, deletion.reason, deletion.unexpected_errors) == ("running", None, 0)
    assert deletion.lease_owner == OWNER
    # asked once more while it runs: found under way, not restarted
    assert not (await start_cascade(db, template_id, "carol", lease=30)).claimed

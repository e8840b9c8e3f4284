"""State changes said once committed (coordinator/states/changes.py), against a migrated
database: one record per row that moved, with its ids; nothing for a write rolled back or
one that moved no row; the session's observers hear the same records."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.metrics import Figures, read_figures
from coordinator.states import upload
from coordinator.states.changes import OBSERVERS, StateChange
from tests.unit.test_state_writes import _template, _upload


@pytest.fixture
async def heard(db: async_sessionmaker[AsyncSession]) -> AsyncIterator[list[StateChange]]:
    changes: list[StateChange] = []
    db.configure(info={OBSERVERS: [changes.append]})
    yield changes
    db.configure(info={})


def said(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "coordinator.states"]


async def test_a_committed_change_is_said_once_with_its_ids(
    db: async_sessionmaker[AsyncSession], heard: list[StateChange], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "coordinator.states")
    async with db() as session:
        tpl = await _template(session)
        row = await _upload(session, tpl)
        await session.commit()
        assert await upload.stored(session, row.id, staged_name="s", size=1, sha256="0" * 64, virtual_size=1)
        assert not said(caplog) and not heard  # not before the commit
        await session.commit()
    [change] = heard
    assert (change.kind, change.id, change.old, change.new) == ("upload", row.id, "uploading", "uploaded")
    assert (change.template_id, change.version, change.node) == (tpl.id, 1, "n1")
    assert change.since is not None  # the upload's creation: what its duration counts from
    [record] = said(caplog)
    assert record.getMessage() == f"upload {row.id}: uploading -> uploaded"
    assert record.pvesphere_fields == {  # type: ignore[attr-defined]
        "entity": "upload",
        "id": row.id,
        "template_id": tpl.id,
        "version": 1,
        "node": "n1",
        "from": "uploading",
        "to": "uploaded",
    }


async def test_a_failure_names_its_error_at_warning(
    db: async_sessionmaker[AsyncSession], heard: list[StateChange], caplog: pytest.LogCaptureFixture
) -> None:
    async with db() as session:
        row = await _upload(session, await _template(session))
        await session.commit()
        assert await upload.abandon(session, row.id, "the client went away")
        await session.commit()
    assert [(c.old, c.new, c.error) for c in heard] == [("uploading", "failed", "the client went away")]
    [record] = said(caplog)
    assert record.levelno == logging.WARNING and "(the client went away)" in record.getMessage()


async def test_nothing_is_said_of_a_rollback_or_of_a_write_that_moved_nothing(
    db: async_sessionmaker[AsyncSession], heard: list[StateChange], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "coordinator.states")
    async with db() as session:
        row_id = (await _upload(session, await _template(session))).id
        await session.commit()
        assert await upload.abandon(session, row_id, "rolled back")
        await session.rollback()
        assert not await upload.start_import(session, row_id)  # uploading cannot go to importing
        await session.commit()
    assert heard == [] and said(caplog) == []


async def test_a_bulk_write_says_each_row(
    db: async_sessionmaker[AsyncSession], heard: list[StateChange]
) -> None:
    async with db() as session:
        tpl = await _template(session)
        rows = [await _upload(session, tpl, version=v) for v in (1, 2)]
        for row in rows:
            assert await upload.stored(
                session, row.id, staged_name="s", size=1, sha256="0" * 64, virtual_size=1
            )
        await session.commit()
        heard.clear()
        assert await upload.stop_imports_of_template(session, tpl.id, "template deleted") == 2
        await session.commit()
    assert sorted((c.id, c.version, c.old, c.new) for c in heard) == [
        (rows[0].id, 1, "uploaded", "failed"),
        (rows[1].id, 2, "uploaded", "failed"),
    ]


async def test_finished_work_is_counted_again_only_when_its_counts_are_stale(
    db: async_sessionmaker[AsyncSession],
) -> None:
    """A scrape between history reads counts work under way afresh and keeps the finished
    counts it had (coordinator/metrics.py: HISTORY_CACHE_SECONDS). (The database is the
    module's: counts are compared with those before.)"""

    def uploads(figures: Figures) -> tuple[int, int]:
        return figures.tasks["upload", "uploading"], figures.tasks["upload", "failed"]

    async with db() as session:
        tpl = await _template(session)
        first = await _upload(session, tpl, version=1)
        await session.commit()
        full = await read_figures(session, 15.0)
        assert await upload.abandon(session, first.id, "gone")
        await _upload(session, tpl, version=2)
        await _upload(session, tpl, version=3)
        await session.commit()
        between = await read_figures(session, 15.0, full)
        fresh = await read_figures(session, 15.0)
    uploading, failed = uploads(full)
    assert uploads(between) == (uploading + 1, failed)  # -1 failed, +2 new; failed as it was
    assert uploads(fresh) == (uploading + 1, failed + 1)
    assert full.tasks["clone", "cloning"] >= 0 and "completed" in {
        s for k, s in full.tasks if k == "sync_task"
    }

"""Fixtures of the unit tests that read and write a real (migrated) database, and the log
capture of every unit test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.session import create_engine, session_factory
from tests.support.db import migrated_database
from tests.support.inprocess import APPS_THREAD


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database at the schema's head for the module's tests, on SQLite and on MariaDB."""
    return migrated_database(request, tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of that database (its engine disposed of after the test)."""
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


class _NotFromTheApps(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != APPS_THREAD


@pytest.fixture(autouse=True)
def _own_log_records_only(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """What a unit test captures is what it logged: not what the in-process coordinator, which
    a worker keeps for the whole session (tests/inprocess), logs from its own thread meanwhile
    (its janitor giving up an upload said "uploading -> failed" into a state-log test)."""
    only_ours = _NotFromTheApps()
    caplog.handler.addFilter(only_ours)
    yield
    caplog.handler.removeFilter(only_ours)

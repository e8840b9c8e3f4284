"""Fixtures of the unit tests that read and write a real (migrated) database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.session import create_engine, session_factory
from tests.support.db import migrated_database


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

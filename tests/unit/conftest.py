"""Fixtures of the unit tests that read and write a real (migrated) database."""

from __future__ import annotations

import pytest

from tests.support.db import migrated_database


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database at the schema's head for the module's tests, on SQLite and on MariaDB."""
    return migrated_database(request, tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])

"""Fixtures for the in-process tests: the coordinator's app and the PVE emulator served from
this process (tests/support/inprocess.py), no agents. A test belongs here when it is about
what the API answers (envelopes, status codes, validation, auth, the OpenAPI document) and
needs no agent, no PVE task and no restart; everything else needs a stack.

``api`` here is the in-process coordinator's, so a test reads as it would against a stack.
Like the stacks, the fixture runs on SQLite, and on MariaDB for the tests marked ``mariadb``.
"""

from __future__ import annotations

import pytest

from tests.conftest import on_database, own_database
from tests.support.api import Api
from tests.support.inprocess import InProcess


@pytest.fixture(params=["sqlite", "mariadb"])
def coordinator(request: pytest.FixtureRequest) -> InProcess:
    return on_database(request, "coordinator")


def _serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database: str
) -> InProcess:
    apps = InProcess(tmp_path_factory.mktemp(f"inprocess-{database}"), own_database(request, database))
    apps.start()
    request.addfinalizer(apps.stop)
    return apps


@pytest.fixture(scope="session")
def coordinator_sqlite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> InProcess:
    return _serve(request, tmp_path_factory, "sqlite")


@pytest.fixture(scope="session")
def coordinator_mariadb(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> InProcess:
    return _serve(request, tmp_path_factory, "mariadb")


@pytest.fixture
def api(coordinator: InProcess) -> Api:
    """The coordinator's API with an admin token."""
    return coordinator.api

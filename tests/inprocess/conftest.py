"""Fixtures for the in-process tests: the coordinator's app and the PVE emulator served from
this process (tests/support/inprocess.py), no agents. A test belongs here when it is about
what the API answers (envelopes, status codes, validation, auth, the OpenAPI document) and
needs no agent, no PVE task and no restart; everything else needs a stack.

``api`` here is the in-process coordinator's, so a test reads as it would against a stack.
Like the stacks, the fixture runs on SQLite, and on MariaDB for the tests marked ``mariadb``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import own_database
from tests.support.api import Api
from tests.support.inprocess import InProcess


@pytest.fixture(scope="session", params=["sqlite", "mariadb"])
def coordinator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcess]:
    apps = InProcess(tmp_path_factory.mktemp(f"inprocess-{request.param}"), own_database(request))
    apps.start()
    yield apps
    apps.stop()


@pytest.fixture
def api(coordinator: InProcess) -> Api:
    """The coordinator's API with an admin token."""
    return coordinator.api

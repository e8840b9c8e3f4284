"""Fixtures for sync tests: a stack whose agents send slowly enough to watch and to hurt.

``slow_stack`` caps every agent's sending rate (``max_send_rate``), so a copy of a few
dozen MiB takes seconds: long enough to kill an agent half way, restart the
coordinator in the middle, or watch the per-node limits. Like ``stack`` it runs once on
SQLite and once on MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.stack import Stack
from tests.conftest import start_stack
from tests.support import mariadb
from tests.support.api import Api

SEND_RATE = 24 << 20  # bytes/s per agent, all its streams together


@pytest.fixture(scope="session", params=["sqlite", "mariadb"])
def slow_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = ""
    if request.param == "mariadb":
        request.getfixturevalue("mariadb_url")  # skipped (or failed in CI) like every MariaDB test
        name, url = mariadb.create_database()
        request.addfinalizer(lambda: mariadb.drop_database(name))
    s = start_stack(
        tmp_path_factory.mktemp(f"slow-{request.param}"),
        url,
        agent_settings={"max_send_rate": SEND_RATE},
    )
    yield s
    s.stop()


@pytest.fixture
def slow_api(slow_stack: Stack) -> Api:
    return Api(slow_stack.api, slow_stack.admin_token)

"""Fixtures for sync tests: a stack whose agents send slowly enough to watch and to hurt.

``slow_stack`` caps every agent's sending rate (``max_send_rate``), so a copy of a few
dozen MiB takes seconds: long enough to kill an agent half way, restart the
coordinator in the middle, or watch the per-node limits. Like ``stack`` it runs once on
SQLite and once on MariaDB.
"""

from __future__ import annotations

import pytest

from demo.stack import Stack
from tests.conftest import on_database, own_stack
from tests.support.api import Api

SEND_RATE = 24 << 20  # bytes/s per agent, all its streams together


@pytest.fixture(params=["sqlite", "mariadb"])
def slow_stack(request: pytest.FixtureRequest) -> Stack:
    return on_database(request, "slow_stack")


@pytest.fixture(scope="session")
def slow_stack_sqlite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(request, tmp_path_factory, "slow", "sqlite", agent_settings={"max_send_rate": SEND_RATE})


@pytest.fixture(scope="session")
def slow_stack_mariadb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(
        request, tmp_path_factory, "slow", "mariadb", agent_settings={"max_send_rate": SEND_RATE}
    )


@pytest.fixture
def slow_api(slow_stack: Stack) -> Api:
    return Api(slow_stack.api, slow_stack.admin_token)

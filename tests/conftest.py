"""Fixtures: the whole stack (emulator, agents, coordinator) as real processes.

``stack`` (and the other stack fixtures) are parametrised over the coordinator's two
databases, SQLite and MariaDB through asyncmy. A stack test runs on SQLite; the tests
marked ``mariadb`` (the MariaDB smoke set: where the database's own behaviour is the
subject: claims, unique keys, races, restarts, paging, ids) run on MariaDB as well.
Running every stack test on both took half the suite's time and found nothing the smoke
set does not. MariaDB is required when CI=true; elsewhere its tests are skipped with the
reason when no MariaDB answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack, StackSettings, free_port, free_ports, use_port_share
from tests.support import image_server, mariadb
from tests.support.api import Api

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker (gw0, gw1, ...) hands out listening ports from a share
    of its own: stacks started side by side never pick the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:
        use_port_share(int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A stack test's MariaDB variant runs only if the test is in the smoke set (``mariadb``);
    the others are reported as deselected."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_mariadb = callspec is not None and "mariadb" in callspec.params.values()
        (dropped if on_mariadb and item.get_closest_marker("mariadb") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    # The longest modules first, the rest as collected: pytest-xdist (--dist loadscope
    # --no-loadscope-reorder, see the Makefile) hands modules out in this order, so a long one
    # never starts last and keeps one worker busy while the others have finished.
    rank = {module: n for n, module in enumerate(LONGEST_FIRST)}
    kept.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
    items[:] = kept


# Modules by their time on one worker, longest first (a loaded run of 1523 tests on
# 2026-12-01: test_faults 220 s ... test_dashboard 50 s; the others take under 45 s). Before
# this order the dashboard's and the 8 GiB copy's modules started last and ended 60 s after
# every other worker was idle.
LONGEST_FIRST = (
    "tests/sync/test_faults.py",
    "tests/sync/test_version_faults.py",
    "tests/coordinator/test_half_made_vms.py",
    "tests/coordinator/test_versions.py",
    "tests/sync/test_sigterm.py",
    "tests/clones/test_clone_api.py",
    "tests/clones/test_agent_clones.py",
    "tests/coordinator/test_pve_outage.py",
    "tests/coordinator/test_imports_end.py",
    "tests/coordinator/test_replicas.py",
    "tests/coordinator/test_fuzz.py",
    "tests/sync/test_tickets_and_limits.py",
    "tests/transfer/test_copy_zeros.py",
    "tests/coordinator/test_template_from_vm.py",
    "tests/coordinator/test_template_from_volume.py",
    "tests/sync/test_staging_budget.py",
    "tests/ui/test_dashboard.py",
)


def start_stack(base: Path, database_url: str = "", **kw: object) -> Stack:
    nodes = kw.get("nodes", StackSettings.nodes)
    assert isinstance(nodes, int)
    ports = {
        "coordinator_port": free_port(),
        "coordinator_tls_port": free_port(),
        "emulator_port": free_port(),
        "first_agent_port": free_ports(nodes),  # agent ports are consecutive from it
    }
    settings = StackSettings(base_dir=base, database_url=database_url, **(ports | kw))  # type: ignore[arg-type]
    stack = Stack(settings)
    stack.start()
    return stack


def own_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    prefix: str,
    database: str | None = None,
    **settings: object,
) -> Stack:
    """A stack with these settings for the tests of one fixture, on ``database`` (default:
    ``request.param``); stopped (and its MariaDB database dropped) at the fixture's end."""
    database = database or request.param
    s = start_stack(
        tmp_path_factory.mktemp(f"{prefix}-{database}"), own_database(request, database), **settings
    )
    request.addfinalizer(s.stop)
    return s


def own_database(request: pytest.FixtureRequest, database: str | None = None) -> str:
    """The database URL for a fixture on ``database`` (default: ``request.param``): "sqlite"
    (empty: the default) or "mariadb" (a database of its own, dropped at the fixture's end)."""
    if (database or request.param) != "mariadb":
        return ""
    request.getfixturevalue("mariadb_url")  # skipped (or failed in CI) like every MariaDB test
    name, url = mariadb.create_database()
    request.addfinalizer(lambda: mariadb.drop_database(name))
    return url


def on_database(request: pytest.FixtureRequest, fixture: str) -> Any:
    """``{fixture}_sqlite`` or ``{fixture}_mariadb``, whichever database the test is
    parametrised with (``request.param``). Both are session fixtures, so both live for the
    session: a session fixture parametrised over the two would be stopped and started again
    whenever the next test wants the other database, which under pytest-xdist (a module at a
    time per worker) is at almost every module, ~10 s a stack."""
    return request.getfixturevalue(f"{fixture}_{request.param}")


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    reason = mariadb.unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires MariaDB: {reason}")
        pytest.skip(reason)
    name, url = mariadb.create_database()
    yield url
    mariadb.drop_database(name)


@pytest.fixture(params=["sqlite", "mariadb"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The stack shared by the session's tests on this database."""
    return on_database(request, "stack")


# The shared stacks' agents download from a test image server on 127.0.0.1 (its own CA):
# tests/coordinator/test_template_from_vm.py's from-url tests.
# The shared stacks' coordinator settings: the version pruner looks every second (not 30 s),
# so that a test sees keep_versions act on a version freed by a removed linked clone at once.
SHARED_STACK_SETTINGS = {"version_prune_interval": 1.0}


@pytest.fixture(scope="session")
def stack_sqlite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(
        request,
        tmp_path_factory,
        "stack",
        "sqlite",
        coordinator_settings=SHARED_STACK_SETTINGS,
        agent_settings=image_server.stack_agent_settings(tmp_path_factory),
    )


@pytest.fixture(scope="session")
def stack_mariadb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(
        request,
        tmp_path_factory,
        "stack",
        "mariadb",
        coordinator_settings=SHARED_STACK_SETTINGS,
        agent_settings=image_server.stack_agent_settings(tmp_path_factory),
    )


@pytest.fixture
def api(stack: Stack) -> Api:
    """The coordinator's API with the admin token."""
    return Api(stack.api, stack.admin_token)


@pytest.fixture
def make_token(stack: Stack):  # type: ignore[no-untyped-def]
    """Create a token of a role through the CLI, as an administrator would."""
    import secrets

    def make(role: str) -> str:
        name = f"{role}-{secrets.token_hex(3)}"
        result = stack.coordinator_cli("token", "create", "--name", name, "--role", role)
        return result.stdout.strip()

    return make

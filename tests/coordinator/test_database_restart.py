"""MariaDB restarted under a running coordinator: mid-import and mid-sync.

The server is the tests' own (tests/support/mariadb_server.py), never the shared one. While
it is down the API answers 503 naming the database and /readyz says why; when it is back
the coordinator reconnects and every job carries on where it was: nothing lost, nothing
done twice, the copies bit-identical.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.stack import Stack, http_json
from tests.conftest import IN_CI, start_stack
from tests.support import mariadb_server
from tests.support.api import Api
from tests.support.images import raw_with_data
from tests.support.mariadb_server import MariaDBServer
from tests.support.syncs import guest_sha256, receive_view, received_copy, sha256, wait_task, wait_tasks
from tests.support.uploads import emulator, importing_slowly, pve_tasks, wait_import
from tests.sync.test_faults import local_template, start_sync
from tests.sync.test_scenarios import assert_template_copy
from tests.sync.test_sigterm import assert_imported

NODE = "pve-node1"
SEND_RATE = 6 << 20  # bytes/s per agent: a 64 MiB copy takes ~11 s
IMPORT_RATE = 1 << 20  # bytes/s for PVE's disk import: an 8 MiB disk takes ~8 s
DOWN_FOR = 8.0  # seconds the database is gone


@pytest.fixture(scope="module")
def database_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    reason = mariadb_server.unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires a MariaDB server binary: {reason}")
        pytest.skip(reason)
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb"))
    server.initialise()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def db_stack(database_server: MariaDBServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("db-restart"),
        database_server.create_database(),
        agent_settings={"max_send_rate": SEND_RATE},
    )
    yield stack
    stack.stop()


@pytest.fixture
def db_api(db_stack: Stack) -> Api:
    return Api(db_stack.api, db_stack.admin_token)


def database_outage(server: MariaDBServer, stack: Stack, api: Api, sig: int) -> float:
    """Stop the server with ``sig``, check what the coordinator answers meanwhile, start it
    again after DOWN_FOR s; returns when it was back (time.monotonic())."""
    server.stop(sig)
    gone = time.monotonic()
    answers: set[tuple[int, str]] = set()
    while time.monotonic() - gone < DOWN_FOR:
        reply = api.get("/templates")
        answers.add((reply.status, reply.error if reply.status != 200 else ""))
        assert reply.status != 503 or "database" in reply.message, reply.body
        status, ready = http_json("GET", stack.coordinator_url + "/readyz")
        assert status == 503 and ready["checks"]["database"] == "error", ready
        assert http_json("GET", stack.coordinator_url + "/healthz")[0] == 200
        time.sleep(0.5)
    # Every request while it was down: a 503 that names the database, never a 500.
    assert answers == {(503, "database_unavailable")}, answers
    server.start()
    return time.monotonic()


def test_database_restart_mid_import_loses_nothing(
    database_server: MariaDBServer, db_stack: Stack, db_api: Api, tmp_path: Path
) -> None:
    api, stack = db_api, db_stack
    image = raw_with_data(tmp_path / "db-import.raw", 8, 8, seed=8)
    name = f"db-import-{secrets.token_hex(3)}"
    try:
        template_id, vmid = importing_slowly(api, stack, image, name, NODE, IMPORT_RATE)
        back = database_outage(database_server, stack, api, signal.SIGTERM)
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})

    info = wait_import(api, template_id)["upload_info"]
    recovery = time.monotonic() - back
    print(f"import recorded {recovery:.1f} s after the database came back")
    assert info["status"] == "imported" and info["vmid"] == vmid, info
    assert_imported(stack, name, NODE, vmid, image, ["OK"])  # once: nothing done twice


def test_database_crash_mid_sync_loses_nothing(
    database_server: MariaDBServer, db_stack: Stack, db_api: Api, tmp_path: Path
) -> None:
    api, stack = db_api, db_stack
    template_id, image = local_template(api, stack, tmp_path, "db-sync", 64)
    size = image.stat().st_size
    task_ids = start_sync(api, stack, template_id, "pve-node2", "pve-node3")
    wait_task(api, task_ids[0], lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.1)
    back = database_outage(database_server, stack, api, signal.SIGKILL)

    tasks = wait_tasks(api, template_id)
    recovery = time.monotonic() - back
    print(f"sync completed {recovery:.1f} s after the database came back")
    assert [(t["status"], t["attempts"]) for t in tasks] == [("completed", 1), ("completed", 1)], tasks
    for task in tasks:
        node = task["target_node"]["node_name"]
        assert sha256(received_copy(stack, node, task["task_id"])) == guest_sha256(image)
        assert receive_view(stack, node, task["task_id"])["received_bytes"] == size  # nothing sent twice
        assert_template_copy(stack, node, task["vmid"], image, "raw")
        assert [e for _, e in pve_tasks(stack, node, "qmcreate", task["vmid"])] == ["OK"]

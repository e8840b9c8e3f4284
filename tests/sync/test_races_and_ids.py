"""The database side of concurrent requests and of ids: on SQLite and on MariaDB.

Concurrent identical requests that create-or-return all get the one row; an id, once
given, is never given again (an agent keys state by it, a user's script follows it).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo.stack import Stack
from shared.version import VERSION
from tests.coordinator.test_enrolment import agent_api, enroll, join_token
from tests.support.api import Api, Reply
from tests.support.images import raw_with_data
from tests.support.syncs import tasks_of
from tests.support.uploads import emulator, node_ids, storage_id, upload

CONCURRENT = 12


@pytest.fixture
def pending_template(stack: Stack, api: Api, tmp_path: Path) -> Iterator[int]:
    """A local-storage template whose import crawls (1 MiB/s), so its sync tasks stay pending;
    they are canceled afterwards."""
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 1 << 20})
    image = raw_with_data(tmp_path / "pending.raw", 16, 16)
    local = storage_id(api, stack, "local", "pve-node1")
    template_id = int(upload(api, stack, image, f"pending-{secrets.token_hex(3)}", local).ok()["template_id"])
    try:
        yield template_id
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
        for task in tasks_of(api, template_id):
            if task["status"] == "pending":
                api.post(f"/templates/sync-tasks/{task['task_id']}/cancel")


@pytest.mark.mariadb
def test_concurrent_identical_sync_requests_all_get_the_same_tasks(
    stack: Stack, api: Api, pending_template: int
) -> None:
    nodes = node_ids(api, stack)
    body = {"target_node_ids": [nodes["pve-node2"], nodes["pve-node3"]]}
    start = threading.Barrier(CONCURRENT)

    def ask(_: int) -> Reply:
        own = api.as_token(api.token)  # one HTTP connection per caller
        start.wait(10)
        return own.post(f"/templates/{pending_template}/sync", json=body)

    with ThreadPoolExecutor(CONCURRENT) as pool:
        replies = list(pool.map(ask, range(CONCURRENT)))
    assert [r.status for r in replies] == [200] * CONCURRENT, [r.body for r in replies if r.status != 200]
    answers = {
        tuple(sorted((t["target_node_name"], t["task_id"], t["status"]) for t in r.data["sync_tasks"]))
        for r in replies
    }
    assert len(answers) == 1, answers
    (answer,) = answers
    tasks = tasks_of(api, pending_template)
    assert sorted((t["target_node"]["node_name"], t["task_id"], t["status"]) for t in tasks) == list(answer)
    instances = api.get(f"/templates/{pending_template}/instances").ok()["instances"]
    assert sorted(i["node_name"] for i in instances) == ["pve-node1", "pve-node2", "pve-node3"]


@pytest.mark.mariadb
def test_concurrent_first_registrations_of_a_node_all_get_its_one_agent_row(stack: Stack, api: Api) -> None:
    node = f"race-{secrets.token_hex(3)}"  # in a cluster of its own: no other test sees it
    credential = enroll(stack, node, join_token(stack, node)).ok()["credential"]
    hello = {
        "node_name": node,
        "cluster_name": node,
        "url": "https://127.0.0.1:9",
        "version": VERSION,  # an agent of another version may be refused (shared/version.py)
        "started_at": "2026-01-01T00:00:00Z",
        "pve_ok": True,
        "staging_free_bytes": 1,
    }
    start = threading.Barrier(CONCURRENT)

    def register(_: int) -> Reply:
        own = agent_api(stack, credential)
        start.wait(10)
        return own.post("/register", json=hello)

    with ThreadPoolExecutor(CONCURRENT) as pool:
        replies = list(pool.map(register, range(CONCURRENT)))
    assert [r.status for r in replies] == [200] * CONCURRENT, [r.body for r in replies if r.status != 200]
    rows = [a for a in api.all("/agents") if a["node_name"] == node]
    assert len(rows) == 1 and {r.data["agent_id"] for r in replies} == {rows[0]["id"]}, rows
    agent_api(stack, credential).post(f"/agents/{rows[0]['id']}/goodbye").ok()  # not live: no work for it


@pytest.mark.mariadb
def test_ids_of_deleted_rows_are_never_given_again(
    stack: Stack, api: Api, tmp_path: Path, pending_template: int
) -> None:
    node2 = node_ids(api, stack)["pve-node2"]

    def sync_to_node2() -> int:
        (task,) = api.post(f"/templates/{pending_template}/sync", json={"target_node_ids": [node2]}).ok()[
            "sync_tasks"
        ]
        return int(task["task_id"])

    # The newest sync task, deleted: the next one gets a new id, not the deleted one's.
    deleted_task = sync_to_node2()
    api.delete(f"/templates/sync-tasks/{deleted_task}").ok()
    assert sync_to_node2() > deleted_task

    # A rejected upload removes the newest template row (and its id) ...
    local = storage_id(api, stack, "local", "pve-node1")
    garbage = tmp_path / "garbage.qcow2"
    garbage.write_bytes(b"not an image" * 1000)
    rejected = upload(api, stack, garbage, f"rejected-{secrets.token_hex(3)}", local)
    assert rejected.status == 422, rejected.body
    # ... which was pending_template + 1 (ids count up one by one on both databases).
    image = raw_with_data(tmp_path / "after.raw", 4, 1)
    after = upload(api, stack, image, f"after-{secrets.token_hex(3)}", local).ok()
    assert after["template_id"] > pending_template + 1, (pending_template, after)

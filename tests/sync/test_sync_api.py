"""What the sync-task API promises: no duplicates, the right 400/404/409s, retry, cancel, delete."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from demo.stack import Stack
from tests.support.api import Api
from tests.support.images import raw_with_data
from tests.support.syncs import agent_get, receive_view, run_cleanup, wait_task, wait_tasks
from tests.support.uploads import emulator, node_ids, storage_id, upload, wait_import
from tests.sync.test_progress import poll_until_done


@pytest.fixture
def slow_imports(stack: Stack) -> Iterator[None]:
    """PVE imports crawl (1 MiB/s) while the test runs: uploads stay `importing`, syncs `pending`."""
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 1 << 20})
    yield
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})


def test_shared_storage_templates_are_not_synced(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = raw_with_data(tmp_path / "shared.raw", 8, 2)
    data = upload(
        api, stack, image, f"shared-{secrets.token_hex(3)}", storage_id(api, stack, "ceph-storage")
    ).ok()
    wait_import(api, data["template_id"])
    reply = api.post(f"/templates/{data['template_id']}/sync", json={"target_node_ids": [2]})
    assert reply.status == 409 and reply.error == "shared_storage_no_sync"
    assert "ceph-storage" in reply.message


def test_bad_sync_requests_name_what_is_wrong(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = raw_with_data(tmp_path / "bad.raw", 8, 2)
    nodes = node_ids(api, stack)
    data = upload(
        api, stack, image, f"bad-{secrets.token_hex(3)}", storage_id(api, stack, "local", "pve-node1")
    )
    template_id = data.ok()["template_id"]
    cases = [
        ({"target_node_ids": [nodes["pve-node1"]]}, 400, "sync_node_is_source", "pve-node1"),
        ({"target_node_ids": [999999]}, 404, "node_not_found", "999999"),
        ({"target_node_ids": []}, 400, "invalid_request", "target_node_ids"),
        ({"target_node_ids": "2"}, 400, "invalid_request", "target_node_ids"),
        ({"nodes": [2]}, 400, "invalid_request", "nodes"),
    ]
    for body, status, error, named in cases:
        reply = api.post(f"/templates/{template_id}/sync", json=body)
        assert (reply.status, reply.error) == (status, error), (body, reply.body)
        assert named in reply.message
    assert api.post("/templates/999999/sync", json={"target_node_ids": [2]}).status == 404
    assert api.get("/templates/sync-tasks/999999").error == "sync_task_not_found"
    for query, named in [
        ("status=running", "status"),
        ("page_size=0", "page_size"),
        ("template_id=x", "template_id"),
    ]:
        reply = api.get(f"/templates/sync-tasks?{query}")
        assert reply.status == 400 and named in reply.message, reply.body


@pytest.mark.mariadb
def test_pending_tasks_are_never_duplicated_and_only_pending_ones_are_deleted(
    stack: Stack, api: Api, tmp_path: Path, slow_imports: None
) -> None:
    nodes = node_ids(api, stack)
    image = raw_with_data(tmp_path / "dup.raw", 16, 16)
    ids = f"{nodes['pve-node2']},{nodes['pve-node3']}"
    data = upload(
        api,
        stack,
        image,
        f"dup-{secrets.token_hex(3)}",
        storage_id(api, stack, "local", "pve-node1"),
        sync_node_ids=ids,
    ).ok()
    template_id = data["template_id"]
    first = {t["target_node_name"]: t["task_id"] for t in data["sync_tasks"]}
    # The import crawls, so the tasks wait: asking again gives the same tasks back.
    again = api.post(f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node2"]]}).ok()
    assert [(t["task_id"], t["status"]) for t in again["sync_tasks"]] == [(first["pve-node2"], "pending")]
    assert api.get(f"/templates/sync-tasks?template_id={template_id}").ok()["total"] == 2

    # Only a failed task can be retried.
    reply = api.post(f"/templates/sync-tasks/{first['pve-node2']}/retry")
    assert reply.status == 409 and reply.error == "not_failed" and "pending" in reply.message
    # A pending task can be deleted; it is gone, and so is its pending instance.
    deleted = api.delete(f"/templates/sync-tasks/{first['pve-node2']}").ok()
    assert deleted == {"task_id": first["pve-node2"], "status": "deleted"}
    assert api.get(f"/templates/sync-tasks/{first['pve-node2']}").status == 404
    nodes_with_instances = [
        i["node_name"] for i in api.get(f"/templates/{template_id}/instances").ok()["instances"]
    ]
    assert nodes_with_instances == ["pve-node1", "pve-node3"]
    # A canceled task is no longer pending: it cannot be deleted.
    canceled = api.post(f"/templates/sync-tasks/{first['pve-node3']}/cancel").ok()
    assert canceled == {"task_id": first["pve-node3"], "status": "canceled"}
    task = api.get(f"/templates/sync-tasks/{first['pve-node3']}").ok()
    assert task["status"] == "canceled" and "canceled" in task["error_message"]
    listed = api.get(f"/templates/sync-tasks?template_id={template_id}&status=canceled").ok()
    assert (listed["total"], [t["task_id"] for t in listed["list"]]) == (1, [first["pve-node3"]])
    assert api.get(f"/templates/sync-tasks?template_id={template_id}").ok()["total"] == 1
    assert api.delete(f"/templates/sync-tasks/{first['pve-node3']}").error == "not_pending"
    # ... and the node can be asked for again: a new task, not the canceled one.
    fresh = api.post(f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node3"]]}).ok()
    fresh_id = fresh["sync_tasks"][0]["task_id"]
    assert fresh_id not in first.values()
    # While that one is active the canceled one cannot be retried; once it is canceled too,
    # the first one can (a cancel keeps the verified bytes for a retry), its instance back.
    assert api.post(f"/templates/sync-tasks/{first['pve-node3']}/retry").error == "sync_task_active"
    api.post(f"/templates/sync-tasks/{fresh_id}/cancel").ok()
    assert api.post(f"/templates/sync-tasks/{first['pve-node3']}/retry").ok() == {
        "task_id": first["pve-node3"],
        "status": "pending",
    }
    instances = api.get(f"/templates/{template_id}/instances").ok()["instances"]
    assert [(i["node_name"], i["status"]) for i in instances] == [
        ("pve-node1", "importing"),
        ("pve-node3", "pending"),
    ]
    api.post(f"/templates/sync-tasks/{first['pve-node3']}/cancel").ok()  # leave nothing running


@pytest.mark.mariadb
def test_a_failed_import_is_retried_without_copying_again(stack: Stack, api: Api, tmp_path: Path) -> None:
    nodes = node_ids(api, stack)
    image = raw_with_data(tmp_path / "retry.raw", 24, 24)
    data = upload(
        api, stack, image, f"retry-{secrets.token_hex(3)}", storage_id(api, stack, "local", "pve-node1")
    )
    template_id = data.ok()["template_id"]
    wait_import(api, template_id)
    # PVE on node 3 refuses the next VM create.
    emulator(
        stack,
        "POST",
        "/pvesim/faults",
        {"kind": "task", "type": "qmcreate", "message": "storage 'local' is not online", "times": 1},
    )
    try:
        (started,) = api.post(
            f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node3"]]}
        ).ok()["sync_tasks"]
        failed = wait_task(api, started["task_id"], lambda t: t["status"] in ("failed", "completed"))
    finally:
        emulator(stack, "DELETE", "/pvesim/faults")
    assert failed["status"] == "failed" and failed["attempts"] == 1, failed
    assert "storage 'local' is not online" in failed["error_message"]
    assert failed["bytes_done"] == failed["bytes_total"]  # the copy itself was fine
    received = receive_view(stack, "pve-node3", started["task_id"])["received_bytes"]

    assert api.post(f"/templates/sync-tasks/{started['task_id']}/retry").ok() == {
        "task_id": started["task_id"],
        "status": "pending",
    }
    samples = poll_until_done(api, started["task_id"], every=0.02)
    done = samples[-1]
    assert done["status"] == "completed" and done["error_message"] is None
    assert done["attempts"] == 2  # the manual retry's attempt counts too
    # progress follows bytes_done, also when the new attempt starts the count from 0.
    copying = [(s["bytes_done"], s["progress"]) for s in samples if s["status"] == "syncing"]
    assert all(progress == 90 * moved // done["bytes_total"] for moved, progress in copying), copying
    # The verified copy stayed on node 3: nothing was sent again.
    assert receive_view(stack, "pve-node3", started["task_id"])["received_bytes"] == received


def test_old_failed_copies_are_cleaned_up_and_a_retry_then_starts_over(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    nodes = node_ids(api, stack)
    image = raw_with_data(tmp_path / "stale.raw", 16, 16)
    data = upload(
        api, stack, image, f"stale-{secrets.token_hex(3)}", storage_id(api, stack, "local", "pve-node1")
    )
    template_id = data.ok()["template_id"]
    wait_import(api, template_id)
    emulator(
        stack, "POST", "/pvesim/faults", {"kind": "task", "type": "qmcreate", "message": "no", "times": 1}
    )
    try:
        (started,) = api.post(
            f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node2"]]}
        ).ok()["sync_tasks"]
        failed = wait_task(api, started["task_id"], lambda t: t["status"] in ("failed", "completed"))
    finally:
        emulator(stack, "DELETE", "/pvesim/faults")
    assert failed["status"] == "failed" and failed["bytes_done"] == failed["bytes_total"]

    # The janitor's pass, run as the coordinator runs it, with the retention already over.
    assert run_cleanup(stack, older_than=timedelta(0)) >= 1
    assert agent_get(stack, "pve-node2", f"/v1/receives/{started['task_id']}").status_code == 404
    task = api.get(f"/templates/sync-tasks/{started['task_id']}").ok()
    assert (task["status"], task["bytes_done"], task["progress"]) == ("failed", 0, 0)

    api.post(f"/templates/sync-tasks/{started['task_id']}/retry").ok()
    (done,) = wait_tasks(api, template_id)
    assert done["status"] == "completed"
    assert receive_view(stack, "pve-node2", started["task_id"])["received_bytes"] == image.stat().st_size


def test_an_agent_names_itself_without_versions(stack: Stack) -> None:
    """The agent runs as root on a PVE host: its answers, errors too, do not say which Python
    and aiohttp it runs (shared/server_header.py)."""
    for path, status in [("/health", 200), ("/v1/receives/999999?task_uid=x", 404), ("/nope", 404)]:
        reply = agent_get(stack, "pve-node2", path)
        assert (reply.status_code, reply.headers["Server"]) == (status, "pvesphere-agent"), path

"""The user guide's scenarios 2 and 3, step by step, over real HTTP (SQLite and MariaDB)."""

from __future__ import annotations

import secrets
from pathlib import Path

from demo.stack import Stack
from tests.support.api import Api
from tests.support.images import compare, qcow2, raw_with_data
from tests.support.syncs import guest_sha256, received_copy, sha256, tasks_of, wait_tasks
from tests.support.uploads import detail, local_image_dir, node_ids, storage_id, upload, vm_conf, wait_import

TASK_FIELDS = {
    "task_id",
    "template_id",
    "template_name",
    "source_node",
    "target_node",
    "storage_name",
    "status",
    "progress",
    "sync_start_time",
    "sync_end_time",
    "error_message",
    "bytes_total",
    "bytes_done",
    "rate_bytes_per_sec",
    "attempts",
    "vmid",
    "created_at",
}


def assert_template_copy(stack: Stack, node: str, vmid: int, image: Path, fmt: str) -> None:
    """Node has VM ``vmid`` as a template whose disk holds exactly the uploaded image."""
    conf = vm_conf(stack, node, vmid)
    assert conf is not None and conf["template"] == "1", conf
    assert conf["scsi0"].startswith(f"local:{vmid}/base-{vmid}-disk-0"), conf["scsi0"]
    disks = list(local_image_dir(stack, node, "local", vmid).glob(f"base-{vmid}-disk-0.*"))
    assert len(disks) == 1
    disk = disks[0]
    result = compare(image, fmt, disk, disk.suffix.lstrip("."))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scenario_2_local_storage_then_sync_by_hand(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = qcow2(tmp_path / "debian-12.qcow2", size_mib=64, data_mib=24)
    name = f"debian-12-{secrets.token_hex(3)}"
    nodes = node_ids(api, stack)
    # 1. upload to node 1's local storage
    data = upload(
        api, stack, image, name, storage_id(api, stack, "local", "pve-node1"), description="Debian 12"
    ).ok()
    assert data["storage_type"] == "dir" and data["is_shared"] is False
    assert data["import_node"] == {"node_id": nodes["pve-node1"], "node_name": "pve-node1"}
    assert data["sync_tasks"] == []
    template_id = data["template_id"]
    # 2. imported on node 1, one available instance there
    d = wait_import(api, template_id)
    assert d["upload_info"]["status"] == "imported"
    (primary,) = d["instances"]
    assert primary["node_name"] == "pve-node1" and primary["status"] == "available" and primary["is_primary"]

    # 3. sync to nodes 2 and 3
    started = api.post(
        f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node2"], nodes["pve-node3"]]}
    ).ok()
    assert [(t["target_node_id"], t["target_node_name"], t["status"]) for t in started["sync_tasks"]] == [
        (nodes["pve-node2"], "pve-node2", "pending"),
        (nodes["pve-node3"], "pve-node3", "pending"),
    ]
    assert started["skipped"] == []
    assert all(isinstance(t["task_id"], int) and t["task_id"] > 0 for t in started["sync_tasks"])

    # 4. follow the tasks
    listed = api.get(f"/templates/sync-tasks?template_id={template_id}").ok()
    assert listed["total"] == 2 and listed["page"] == 1 and listed["page_size"] == 10
    assert all(set(t) == TASK_FIELDS for t in listed["list"])
    assert [t["task_id"] for t in listed["list"]] == sorted(
        (t["task_id"] for t in started["sync_tasks"]), reverse=True
    )
    one = api.get(f"/templates/sync-tasks/{started['sync_tasks'][0]['task_id']}").ok()
    assert one["template_id"] == template_id and one["template_name"] == name
    assert one["target_node"] == {"node_id": nodes["pve-node2"], "node_name": "pve-node2"}
    assert one["storage_name"] == "local"

    tasks = wait_tasks(api, template_id)
    for task in tasks:
        assert task["status"] == "completed", task
        assert task["progress"] == 100 and task["error_message"] is None
        # A copy moves the image as the guest sees it: its virtual size.
        assert task["bytes_total"] == task["bytes_done"] == 64 << 20
        assert task["sync_start_time"] and task["sync_end_time"] >= task["sync_start_time"]
        assert task["rate_bytes_per_sec"] == 0  # nothing moves any more
    vmids = {t["vmid"] for t in tasks} | {primary["vmid"]}
    assert len(vmids) == 3 and all(9000 <= v <= 9999 for v in vmids)  # unique cluster-wide

    # 5. every node has the template, bit for bit the uploaded image
    for task in tasks:
        node = task["target_node"]["node_name"]
        assert sha256(received_copy(stack, node, task["task_id"])) == guest_sha256(image)
        assert_template_copy(stack, node, task["vmid"], image, "qcow2")
    instances = detail(api, template_id)["instances"]
    assert [i["node_name"] for i in instances] == ["pve-node1", "pve-node2", "pve-node3"]
    assert all(i["status"] == "available" and i["storage_name"] == "local" for i in instances)
    assert [i.get("sync_progress") for i in instances] == [None, 100, 100]
    assert [i["vmid"] for i in instances[1:]] == [
        t["vmid"] for t in sorted(tasks, key=lambda t: t["task_id"])
    ]

    # Asking again copies nothing: the nodes already have it.
    again = api.post(f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node2"]]}).ok()
    assert again["sync_tasks"] == []
    assert again["skipped"] == [
        {"node_id": nodes["pve-node2"], "node_name": "pve-node2", "reason": again["skipped"][0]["reason"]}
    ]
    assert "already has this template" in again["skipped"][0]["reason"]
    assert len(tasks_of(api, template_id)) == 2


def test_scenario_3_batch_upload_with_sync_to_every_node(stack: Stack, api: Api, tmp_path: Path) -> None:
    nodes = node_ids(api, stack)
    local1 = storage_id(api, stack, "local", "pve-node1")
    tag = secrets.token_hex(3)
    uploaded = {}
    # 1. three templates, each with sync_node_ids=2,3
    for name in ("centos7", "ubuntu2204", "debian12"):
        image = raw_with_data(tmp_path / f"{name}.raw", 32, 32, seed=len(name))
        ids = f"{nodes['pve-node2']},{nodes['pve-node3']}"
        data = upload(api, stack, image, f"{name}-{tag}", local1, sync_node_ids=ids).ok()
        # 2. the sync tasks exist at once, pending until the import is done
        assert [(t["target_node_name"], t["status"]) for t in data["sync_tasks"]] == [
            ("pve-node2", "pending"),
            ("pve-node3", "pending"),
        ]
        uploaded[data["template_id"]] = image
    # 3. monitor: the status filter shows only what it names
    syncing = api.get("/templates/sync-tasks?status=syncing&page_size=100").ok()
    assert all(t["status"] == "syncing" for t in syncing["list"])
    # 4. everything ends on every node
    for template_id, image in uploaded.items():
        tasks = wait_tasks(api, template_id)
        assert sorted((t["target_node"]["node_name"], t["status"]) for t in tasks) == [
            ("pve-node2", "completed"),
            ("pve-node3", "completed"),
        ]
        for task in tasks:
            assert_template_copy(stack, task["target_node"]["node_name"], task["vmid"], image, "raw")
    done = api.get("/templates/sync-tasks?status=completed&page_size=100").ok()
    ours = {t["task_id"] for t in done["list"] if t["template_id"] in uploaded}
    assert len(ours) == 6

"""Deleting uploaded templates: soft delete hides, cascade removes the VMs, images, instances and tasks."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.support import images
from tests.support.api import Api, Reply
from tests.support.syncs import wait_tasks
from tests.support.uploads import (
    emulator,
    local_image_dir,
    node_ids,
    rows_named,
    shared_volume,
    staged_files,
    storage_id,
    upload,
    vm_anywhere,
    vm_conf,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _imported(
    stack: Stack, api: Api, tmp_path: Path, name: str, storage: int, **fields: Any
) -> dict[str, Any]:
    image = images.qcow2(tmp_path / f"{name}.qcow2", size_mib=16, data_mib=2)
    data = upload(api, stack, image, name, storage, wait=True, **fields).ok()
    assert data["status"] == "imported", data
    detail = api.get(f"/templates/{data['template_id']}/detail?include_instances=true").ok()
    return {**data, "vmid": detail["upload_info"]["vmid"], "detail": detail}


def _cascade(api: Api, template_id: int, timeout: float = 60) -> Reply:
    """DELETE ?cascade=true, waiting out a sync that runs (409 sync_running) as a user would."""
    deadline = time.monotonic() + timeout
    while True:
        reply = api.delete(f"/templates/{template_id}?cascade=true")
        if reply.status != 409 or reply.error != "sync_running" or time.monotonic() > deadline:
            return reply
        time.sleep(1)


def test_cascade_delete_of_a_shared_template_removes_its_vm(stack: Stack, api: Api, tmp_path: Path) -> None:
    name = _name("ceph-gone")
    made = _imported(stack, api, tmp_path, name, storage_id(api, stack, "ceph-storage"))
    template_id, vmid = made["template_id"], made["vmid"]
    node = made["import_node"]["node_name"]
    disk = shared_volume(stack, "ceph-storage", f"base-{vmid}-disk-0")
    assert vm_anywhere(stack, vmid) == [node] and disk.exists()

    deleted = api.delete(f"/templates/{template_id}?cascade=true").ok()
    # One VM for all instances of a shared-storage template; its staged copy went after the import.
    assert deleted == {
        "id": template_id,
        "deleted": True,
        "cascade": True,
        "removed_vms": [{"node_name": node, "vmid": vmid, "existed": True}],
        "removed_images": 0,
    }
    assert vm_anywhere(stack, vmid) == []
    assert not disk.exists()
    assert api.get(f"/templates/{template_id}").status == 404
    assert api.get(f"/templates/{template_id}/instances").status == 404
    rows = rows_named(stack, name)
    assert rows.instances == [] and rows.tasks == []
    assert [t.deleted_at is not None for t in rows.templates] == [True]
    assert not any(f.split("/", 1)[1] == rows.uploads[0].staged_name for f in staged_files(stack))
    # Asking again is harmless: nothing is left to remove.
    again = api.delete(f"/templates/{template_id}?cascade=true").ok()
    assert again["removed_vms"] == [] and again["removed_images"] == 0


@pytest.mark.mariadb
def test_cascade_delete_of_a_local_template_removes_vm_image_and_tasks(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    name = _name("local-gone")
    nodes = node_ids(api, stack)
    made = _imported(
        stack,
        api,
        tmp_path,
        name,
        storage_id(api, stack, "local", "pve-node1"),
        sync_node_ids=str(nodes["pve-node2"]),
    )
    template_id, vmid = made["template_id"], made["vmid"]
    assert [t["target_node_name"] for t in made["sync_tasks"]] == ["pve-node2"]
    rows = rows_named(stack, name)
    staged = rows.uploads[0].staged_name
    assert f"pve-node1/{staged}" in staged_files(stack)  # kept as the source of syncs
    assert [t.id for t in rows.tasks] == [made["sync_tasks"][0]["task_id"]]
    assert vm_conf(stack, "pve-node1", vmid) is not None
    (synced,) = wait_tasks(api, template_id)  # the copy to node 2 makes a second VM and image
    assert synced["status"] == "completed"

    reply = _cascade(api, template_id)
    deleted = reply.ok()
    assert deleted["id"] == template_id and deleted["deleted"] is True and deleted["cascade"] is True
    assert sorted((v["node_name"], v["vmid"]) for v in deleted["removed_vms"]) == [
        ("pve-node1", vmid),
        ("pve-node2", synced["vmid"]),
    ]
    assert deleted["removed_images"] == 2  # the upload's staged file and node 2's received copy
    for vm in deleted["removed_vms"]:
        assert vm_conf(stack, vm["node_name"], vm["vmid"]) is None
    assert not local_image_dir(stack, "pve-node1", "local", vmid).exists() or not any(
        local_image_dir(stack, "pve-node1", "local", vmid).iterdir()
    )
    assert f"pve-node1/{staged}" not in staged_files(stack)
    rows = rows_named(stack, name)
    assert rows.instances == [] and rows.tasks == []
    assert rows.uploads[0].staged_name == ""


@pytest.mark.mariadb
def test_soft_delete_only_hides_and_cascade_finishes_the_job(stack: Stack, api: Api, tmp_path: Path) -> None:
    name = _name("soft")
    made = _imported(stack, api, tmp_path, name, storage_id(api, stack, "ceph-storage"))
    template_id, vmid = made["template_id"], made["vmid"]

    soft = api.delete(f"/templates/{template_id}").ok()
    assert soft == {
        "id": template_id,
        "deleted": True,
        "cascade": False,
        "removed_vms": [],
        "removed_images": 0,
    }
    assert api.get(f"/templates/{template_id}").status == 404
    assert api.get(f"/templates/{template_id}/detail").status == 404
    assert api.get(f"/templates?name={name}").ok()["total"] == 0
    # Nothing removed from Proxmox, nothing from the database but the visibility.
    assert vm_anywhere(stack, vmid) == [made["import_node"]["node_name"]]
    assert {i.status for i in rows_named(stack, name).instances} == {"available"}
    # The name is free for a new template.
    other = _imported(stack, api, tmp_path, name, storage_id(api, stack, "ceph-storage"))
    assert other["template_id"] != template_id and other["vmid"] != vmid

    deleted = api.delete(f"/templates/{template_id}?cascade=true").ok()
    assert deleted["removed_vms"] == [
        {"node_name": made["import_node"]["node_name"], "vmid": vmid, "existed": True}
    ]
    assert vm_anywhere(stack, vmid) == []
    assert vm_anywhere(stack, other["vmid"]) != []  # the new template is untouched
    assert api.get(f"/templates/{other['template_id']}").ok()["template_name"] == name


def test_pve_failure_during_cascade_is_shown_and_retried_until_done(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    name = _name("stubborn")
    made = _imported(stack, api, tmp_path, name, storage_id(api, stack, "ceph-storage"))
    template_id, vmid = made["template_id"], made["vmid"]
    node = made["import_node"]["node_name"]
    emulator(
        stack,
        "POST",
        "/pvesim/faults",
        {"kind": "task", "type": "qmdestroy", "message": "rbd: sysfs write failed", "times": 1},
    )
    failed = api.delete(f"/templates/{template_id}?cascade=true")
    assert failed.status == 202, failed.body
    assert failed.data["status"] == "deleting"
    deletion = failed.data["deletion"]
    assert deletion["reason"].startswith(f"deleting VM {vmid} on {node} failed: ")
    assert "rbd: sysfs write failed" in deletion["reason"]
    assert deletion["remaining"] == [{"node_name": node, "what": "vm", "vmid": vmid}]
    assert deletion["attempts"] == 1 and deletion["next_attempt_at"] is not None

    # PVE answers the next time: the job finishes on its own, nobody asks again.
    deadline = time.monotonic() + 30
    while api.get(f"/templates/{template_id}").status != 404:
        assert time.monotonic() < deadline, api.get(f"/templates/{template_id}").body
        time.sleep(0.3)
    assert vm_anywhere(stack, vmid) == []
    assert not shared_volume(stack, "ceph-storage", f"base-{vmid}-disk-0").exists()
    assert rows_named(stack, name).instances == []


def test_failed_import_reports_why_and_leaves_no_half_made_vm(stack: Stack, api: Api, tmp_path: Path) -> None:
    name = _name("half-made")
    image = images.qcow2(tmp_path / "half.qcow2", size_mib=16, data_mib=2)
    emulator(
        stack,
        "POST",
        "/pvesim/faults",
        {"kind": "task", "type": "qmtemplate", "message": "can't convert: disk is busy", "times": 1},
    )
    reply = upload(api, stack, image, name, storage_id(api, stack, "ceph-storage"), wait=True)
    assert reply.status == 502, reply.body
    assert reply.error == "import_failed"
    assert "can't convert: disk is busy" in reply.message
    result = reply.data["result"]
    assert result["status"] == "failed" and result["error_message"] == reply.message
    template_id = result["template_id"]
    d = api.get(f"/templates/{template_id}/detail?include_instances=true").ok()
    assert d["upload_info"]["status"] == "failed"
    assert d["upload_info"]["error_message"] == reply.message
    assert {i["status"] for i in d["instances"]} == {"failed"}
    vmid = d["upload_info"]["vmid"]
    # PVE made the VM but could not make it a template: the agent removed it, disk and all,
    # by the time the failure was reported.
    assert vm_anywhere(stack, vmid) == []
    assert not shared_volume(stack, "ceph-storage", f"vm-{vmid}-disk-0").exists()

    deleted = api.delete(f"/templates/{template_id}?cascade=true").ok()
    assert all(not vm["existed"] for vm in deleted["removed_vms"]), deleted
    assert rows_named(stack, name).instances == []
    again = api.delete(f"/templates/{template_id}?cascade=true").ok()
    assert again["removed_vms"] == [] and again["removed_images"] == 0

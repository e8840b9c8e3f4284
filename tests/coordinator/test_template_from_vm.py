"""A template made from an existing VM (contract 6.3, POST /templates/from-vm), over real HTTP:
a stopped VM's disk and a snapshot's become templates whose disks are the VM's (qemu-img
compare), synced to another node; the source VM is left exactly as it was; a running VM
without a snapshot, and every bad input, is refused and leaves nothing behind."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.support import images
from tests.support.api import Api
from tests.support.pve import fail_calls
from tests.support.source_vms import (
    config_text,
    create_vm,
    destroy_vm,
    free_vmid,
    run_task,
    sha256,
    write_pattern,
)
from tests.support.syncs import wait_tasks
from tests.support.uploads import (
    all_vmids,
    assert_nothing_left,
    local_image_dir,
    node_ids,
    rows_named,
    shared_volume,
    staged_files,
    storage_id,
    vm_conf,
    wait_import,
)

NODE = "pve-node1"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class SourceVm:
    def __init__(self, stack: Stack, vmid: int, disk: Path, image: Path) -> None:
        self.stack, self.vmid, self.disk, self.image = stack, vmid, disk, image

    def state(self) -> tuple[str, str]:
        """What must not change: the config file's text and the disk's bytes."""
        return config_text(self.stack, NODE, self.vmid), sha256(self.disk)


@pytest.fixture
def source_vm(stack: Stack, tmp_path: Path) -> Iterator[SourceVm]:
    image = images.qcow2(tmp_path / "source.qcow2", size_mib=24, data_mib=4, seed=7)
    vmid = free_vmid(stack)
    disk = create_vm(stack, NODE, vmid, image)
    yield SourceVm(stack, vmid, disk, image)
    destroy_vm(stack, NODE, vmid)


def from_vm(api: Api, stack: Stack, **body: Any) -> Any:
    body.setdefault("cluster_id", stack.cluster_id)
    return api.post("/templates/from-vm", json=body)


def _template_disk(stack: Stack, node: str, vmid: int) -> Path:
    found = sorted(local_image_dir(stack, node, "local", vmid).iterdir())
    assert [p.name for p in found] == [f"base-{vmid}-disk-0.raw"], found
    return found[0]


def _same(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    return images.compare(a, a_fmt, b, b_fmt).returncode == 0


@pytest.mark.mariadb
def test_stopped_vm_becomes_a_template_with_its_disk_synced_to_another_node(
    stack: Stack, api: Api, source_vm: SourceVm
) -> None:
    nodes = node_ids(api, stack)
    name = _name("from-vm")
    before = source_vm.state()

    data = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=source_vm.vmid,
        template_name=name,
        description="made from a VM",
        storage_id=storage_id(api, stack, "local", NODE),
        sync_node_ids=[nodes["pve-node2"]],
        vm_config={"cores": 2, "memory": 1024},
    ).ok()
    assert data["import_node"] == {"node_id": nodes[NODE], "node_name": NODE}
    assert (data["storage_type"], data["is_shared"], data["status"]) == ("dir", False, "uploaded")
    assert [(t["target_node_name"], t["status"]) for t in data["sync_tasks"]] == [("pve-node2", "pending")]

    d = wait_import(api, data["template_id"])
    assert d["template_name"] == name and d["description"] == "made from a VM"
    info = d["upload_info"]
    assert info["upload_id"] == data["upload_id"] and info["status"] == "imported"
    # Boot order "ide2;scsi0": the CD-ROM is skipped, scsi0 is the boot disk.
    assert info["file_name"] == f"vm-{source_vm.vmid}-scsi0.qcow2"
    [task] = wait_tasks(api, data["template_id"])
    assert task["status"] == "completed", task

    instances = api.get(f"/templates/{data['template_id']}/instances").ok()["instances"]
    by_node = {i["node_name"]: i for i in instances}
    assert sorted(by_node) == [NODE, "pve-node2"]
    assert all(i["status"] == "available" for i in instances)
    for node, inst in by_node.items():
        conf = vm_conf(stack, node, inst["vmid"])
        assert conf is not None and conf["template"] == "1"
        assert (conf["cores"], conf["memory"]) == ("2", "1024")
        disk = _template_disk(stack, node, inst["vmid"])
        assert _same(source_vm.disk, "qcow2", disk, "raw"), f"template disk on {node} differs from the VM's"
    assert source_vm.state() == before, "the source VM changed"
    assert [f for f in staged_files(stack) if ".part" in f] == []


def test_a_template_on_shared_storage_from_a_vm_on_local_storage(
    stack: Stack, api: Api, source_vm: SourceVm
) -> None:
    nodes = node_ids(api, stack)
    data = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=source_vm.vmid,
        template_name=_name("to-ceph"),
        storage_id=storage_id(api, stack, "ceph-storage"),
        wait=True,
    ).ok()
    assert (data["storage_type"], data["is_shared"], data["status"]) == ("rbd", True, "imported")
    assert data["import_node"]["node_name"] == NODE and data["sync_tasks"] == []
    instances = api.get(f"/templates/{data['template_id']}/instances").ok()["instances"]
    assert sorted(i["node_name"] for i in instances) == sorted(nodes)
    vmid = instances[0]["vmid"]
    disk = shared_volume(stack, "ceph-storage", f"base-{vmid}-disk-0")
    assert _same(source_vm.disk, "qcow2", disk, "raw")


def test_running_vm_without_snapshot_is_a_409_naming_it(stack: Stack, api: Api, source_vm: SourceVm) -> None:
    nodes = node_ids(api, stack)
    run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{source_vm.vmid}/status/start")
    name = _name("running")
    staged, vms, before = staged_files(stack), all_vmids(stack), source_vm.state()

    reply = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=source_vm.vmid,
        template_name=name,
        storage_id=storage_id(api, stack, "local", NODE),
    )
    assert reply.status == 409, reply
    assert reply.error == "vm_running"
    assert f"VM {source_vm.vmid}" in reply.message and "running" in reply.message
    assert rows_named(stack, name).uploads == []
    assert_nothing_left(stack, name, staged, vms)
    assert source_vm.state() == before


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_snapshot_export_holds_the_snapshot_not_the_current_disk(
    stack: Stack, api: Api, source_vm: SourceVm, running: bool
) -> None:
    nodes, vmid = node_ids(api, stack), source_vm.vmid
    run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{vmid}/snapshot", {"snapname": "golden"})
    write_pattern(source_vm.disk, 0x5A)  # after the snapshot: the VM's disk moves on
    assert not _same(source_vm.image, "qcow2", source_vm.disk, "qcow2")
    if running:
        run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{vmid}/status/start")
    before = source_vm.state()
    name = _name("golden")

    data = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=vmid,
        disk="scsi0",
        snapshot="golden",
        template_name=name,
        storage_id=storage_id(api, stack, "local", NODE),
        wait=True,
    ).ok()
    assert data["status"] == "imported"
    d = wait_import(api, data["template_id"])
    assert d["upload_info"]["file_name"] == f"vm-{vmid}-scsi0-golden.qcow2"
    inst = d["instances"][0]
    disk = _template_disk(stack, NODE, inst["vmid"])
    assert _same(source_vm.image, "qcow2", disk, "raw"), "the template is not the snapshot's content"
    assert not _same(source_vm.disk, "qcow2", disk, "raw")
    assert source_vm.state() == before, "the source VM changed"


def test_bad_inputs_are_refused_and_leave_nothing(stack: Stack, api: Api, source_vm: SourceVm) -> None:
    nodes, vmid = node_ids(api, stack), source_vm.vmid
    local1 = storage_id(api, stack, "local", NODE)
    local2 = storage_id(api, stack, "local", "pve-node2")
    ceph = storage_id(api, stack, "ceph-storage")
    taken = _name("taken")
    base = {"node_id": nodes[NODE], "vmid": vmid, "storage_id": local1}
    # A template of the name already exists: made from the VM itself.
    wait_import(api, from_vm(api, stack, template_name=taken, **base).ok()["template_id"])
    staged, vms, before = staged_files(stack), all_vmids(stack), source_vm.state()
    name = _name("bad")
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"node_id": 999999}, 404, "node_not_found", "node 999999"),
        ({"cluster_id": 999999}, 404, "cluster_not_found", "cluster 999999"),
        ({"vmid": 999999}, 404, "vm_not_found", "VM 999999"),
        ({"node_id": nodes["pve-node2"], "storage_id": ceph}, 404, "vm_not_found", "not on node pve-node2"),
        ({"snapshot": "nosuch"}, 404, "snapshot_not_found", "nosuch"),
        ({"disk": "scsi7"}, 404, "disk_not_found", "scsi7"),
        ({"disk": "ide2"}, 400, "disk_not_exportable", "CD-ROM"),
        ({"disk": "efidisk0"}, 400, "invalid_request", "disk"),
        ({"disk": "scsi0;rm"}, 400, "invalid_request", "disk"),
        ({"snapshot": "../x"}, 400, "invalid_request", "snapshot"),
        ({"template_name": ""}, 400, "invalid_request", "template_name"),
        ({"template_name": "a\nb"}, 400, "invalid_request", "template_name"),
        ({"template_name": taken}, 409, "template_name_taken", taken),
        ({"template_id": 1}, 400, "invalid_request", "template_id"),
        ({"storage_id": local2}, 400, "storage_missing_on_node", "pve-node1"),
        ({"sync_node_ids": [nodes[NODE]]}, 400, "sync_node_is_source", NODE),
        ({"vmid": 5}, 400, "invalid_request", "vmid"),
        ({"vm_config": {"args": "-x"}}, 400, "invalid_request", "args"),
        ({"vm_config": {"scsi1": "ceph-storage:1"}}, 400, "invalid_request", "scsi1"),
    ]
    for change, status, slug, text in cases:
        body = {**base, "template_name": name, **change}
        reply = from_vm(api, stack, **body)
        assert (reply.status, reply.error) == (status, slug), (change, reply)
        assert text in reply.message, (change, reply.message)
    # PVE failing while the VM is looked at: a 502 saying what PVE said.
    fail_calls(stack, "GET", rf"/nodes/{NODE}/qemu/{vmid}/snapshot", 500, message="cfs-lock timeout")
    reply = from_vm(api, stack, **{**base, "template_name": name, "snapshot": "golden"})
    assert (reply.status, reply.error) == (502, "pve_error"), reply
    assert "cfs-lock timeout" in reply.message
    assert rows_named(stack, name).templates == [] and rows_named(stack, name).uploads == []
    assert_nothing_left(stack, name, staged, vms)
    assert source_vm.state() == before


def test_an_export_that_fails_midway_leaves_only_a_failed_upload_record(
    stack: Stack, api: Api, source_vm: SourceVm
) -> None:
    """PVE lists the snapshot but the disk no longer holds it (removed behind PVE's back): the
    agent's checks pass, qemu-img then fails. The upload is given up as a broken-off one is."""
    nodes, vmid = node_ids(api, stack), source_vm.vmid
    run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{vmid}/snapshot", {"snapname": "gone"})
    images.qemu_img("snapshot", "-d", "gone", str(source_vm.disk))
    staged, vms, before = staged_files(stack), all_vmids(stack), source_vm.state()
    name = _name("midway")

    reply = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=vmid,
        snapshot="gone",
        template_name=name,
        storage_id=storage_id(api, stack, "local", NODE),
    )
    assert (reply.status, reply.error) == (502, "export_failed"), reply
    assert "qemu-img could not read" in reply.message and "gone" in reply.message
    [upload] = rows_named(stack, name).uploads
    assert upload.status == "failed" and upload.error_message == reply.message
    assert_nothing_left(stack, name, staged, vms)
    assert source_vm.state() == before
    # The name is free again.
    data = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=vmid,
        template_name=name,
        storage_id=storage_id(api, stack, "local", NODE),
    ).ok()
    assert wait_import(api, data["template_id"])["upload_info"]["status"] == "imported"

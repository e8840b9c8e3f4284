"""A template made from an existing VM (contract 6.3, POST /templates/from-vm), over real HTTP:
a stopped VM's disk and a snapshot's become templates whose disks are the VM's (qemu-img
compare), synced to another node; the source VM is left exactly as it was; a running VM
without a snapshot, and every bad input, is refused and leaves nothing behind.

Its sibling, a template from a URL (contract 6.5, POST /templates/from-url), shares this
module's stack: an image on an HTTPS server of the test process, downloaded once by the import
node's agent (resumed after a broken connection) and synced to the two other nodes; a bad URL,
a host not allowed and a wrong checksum refused, leaving nothing behind."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.coordinator.conftest import NODE, SourceVm
from tests.support import images
from tests.support.api import Api
from tests.support.image_server import Behaviour, ImageServer, image_server_ca, serving
from tests.support.pve import fail_calls
from tests.support.source_vms import run_task, same_disk, template_disk, write_pattern
from tests.support.syncs import wait_tasks
from tests.support.uploads import (
    all_vmids,
    assert_nothing_left,
    node_ids,
    rows_named,
    shared_volume,
    staged_files,
    storage_id,
    vm_conf,
    wait_import,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def from_vm(api: Api, stack: Stack, **body: Any) -> Any:
    body.setdefault("cluster_id", stack.cluster_id)
    return api.post("/templates/from-vm", json=body)


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
        disk = template_disk(stack, node, inst["vmid"])
        assert same_disk(source_vm.disk, "qcow2", disk, "raw"), f"template disk on {node} differs"
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
    assert same_disk(source_vm.disk, "qcow2", disk, "raw")


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
    assert not same_disk(source_vm.image, "qcow2", source_vm.disk, "qcow2")
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
    disk = template_disk(stack, NODE, inst["vmid"])
    assert same_disk(source_vm.image, "qcow2", disk, "raw"), "the template is not the snapshot's content"
    assert not same_disk(source_vm.disk, "qcow2", disk, "raw")
    assert source_vm.state() == before, "the source VM changed"


def test_a_vms_disk_becomes_a_new_version_rolled_out_where_the_template_is(
    stack: Stack, api: Api, source_vm: SourceVm
) -> None:
    """With template_id the disk is the template's next version: on the template's storage,
    with a sync task to every node that holds an earlier version, current once imported."""
    nodes = node_ids(api, stack)
    local = storage_id(api, stack, "local", NODE)
    first = from_vm(
        api,
        stack,
        node_id=nodes[NODE],
        vmid=source_vm.vmid,
        template_name=_name("versioned"),
        storage_id=local,
        sync_node_ids=[nodes["pve-node2"]],
    ).ok()
    template_id = first["template_id"]
    wait_import(api, template_id)
    wait_tasks(api, template_id)
    write_pattern(source_vm.disk, 0x5A)  # the VM changed since version 1
    second = from_vm(
        api, stack, node_id=nodes[NODE], vmid=source_vm.vmid, template_id=template_id, wait=True
    ).ok()
    assert (second["template_id"], second["version"], second["status"]) == (template_id, 2, "imported")
    assert [t["target_node_name"] for t in second["sync_tasks"]] == ["pve-node2"]
    assert api.get(f"/templates/{template_id}/detail").ok()["current_version"] == 2
    assert {t["status"] for t in wait_tasks(api, template_id)} == {"completed"}
    new = api.get(f"/templates/{template_id}/instances?version=2").ok()["instances"]
    assert sorted(i["node_name"] for i in new) == [NODE, "pve-node2"]
    for inst in new:
        disk = template_disk(stack, inst["node_name"], inst["vmid"])
        assert same_disk(source_vm.disk, "qcow2", disk, "raw"), (
            f"version 2 on {inst['node_name']} is not the VM's disk"
        )
    # A storage other than the template's is refused: every version is on the template's.
    other = storage_id(api, stack, "local-lvm", NODE)
    refused = from_vm(
        api, stack, node_id=nodes[NODE], vmid=source_vm.vmid, template_id=template_id, storage_id=other
    )
    assert (refused.status, refused.error) == (400, "invalid_request") and "storage_id" in refused.message


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


@pytest.fixture
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    """An HTTPS image server on 127.0.0.1 whose CA the stack's agents trust (conftest.py)."""
    with serving(ImageServer(image_server_ca(tmp_path_factory))) as server:
        yield server


def from_url(api: Api, stack: Stack, **body: Any) -> Any:
    body.setdefault("cluster_id", stack.cluster_id)
    return api.post("/templates/from-url", json=body)


def test_a_url_is_downloaded_once_resumed_and_synced_to_two_nodes(
    stack: Stack, api: Api, image_server: ImageServer, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "noble-server-cloudimg.qcow2", size_mib=24, data_mib=4, seed=13)
    sha = image_server.add("images/noble-server-cloudimg.qcow2", image)
    image_server.behaviour = Behaviour(break_after=1 << 20)  # the connection breaks after 1 MiB
    nodes = node_ids(api, stack)
    name = _name("from-url")

    data = from_url(
        api,
        stack,
        url=f"{image_server.url}/images/noble-server-cloudimg.qcow2",
        sha256=sha.upper(),
        template_name=name,
        description="Ubuntu from its mirror",
        storage_id=storage_id(api, stack, "local", NODE),
        sync_node_ids=[nodes["pve-node2"], nodes["pve-node3"]],
    ).ok()
    assert data["import_node"] == {"node_id": nodes[NODE], "node_name": NODE}
    assert (data["status"], data["version"]) == ("uploaded", 1)
    assert sorted(t["target_node_name"] for t in data["sync_tasks"]) == ["pve-node2", "pve-node3"]
    # One download for the cluster: the first request, then the rest of it with Range.
    assert [(s.path, s.range) for s in image_server.seen] == [
        ("images/noble-server-cloudimg.qcow2", None),
        ("images/noble-server-cloudimg.qcow2", f"bytes={1 << 20}-"),
    ]
    # Its progress was on the upload's row while it downloaded (the resume waits a second).
    [row] = rows_named(stack, name).uploads
    assert row.expected_bytes == image.stat().st_size and 0 < row.received_bytes <= row.expected_bytes

    d = wait_import(api, data["template_id"])
    info = d["upload_info"]
    assert (info["status"], info["file_name"], info["sha256"]) == (
        "imported",
        "noble-server-cloudimg.qcow2",
        sha,
    )
    tasks = wait_tasks(api, data["template_id"])
    assert [t["status"] for t in tasks] == ["completed", "completed"], tasks
    instances = api.get(f"/templates/{data['template_id']}/instances").ok()["instances"]
    assert sorted(i["node_name"] for i in instances) == [NODE, "pve-node2", "pve-node3"]
    for inst in instances:
        disk = template_disk(stack, inst["node_name"], inst["vmid"])
        assert same_disk(image, "qcow2", disk, "raw"), (
            f"template disk on {inst['node_name']} differs from the image"
        )
    assert len(image_server.seen) == 2, "the other nodes got the image from the agents, not the URL"
    assert [f for f in staged_files(stack) if ".part" in f] == []


def test_a_bad_url_a_host_not_allowed_and_a_wrong_checksum_leave_nothing(
    stack: Stack, api: Api, image_server: ImageServer, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "cloud.qcow2", size_mib=8, data_mib=1, seed=3)
    sha = image_server.add("cloud.qcow2", image)
    staged, vms = staged_files(stack), all_vmids(stack)
    name = _name("bad-url")
    good = f"{image_server.url}/cloud.qcow2"
    base = {"template_name": name, "storage_id": storage_id(api, stack, "local", NODE), "url": good}
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"url": good.replace("https:", "http:")}, 400, "invalid_request", "https://"),
        ({"url": good + "#x"}, 400, "invalid_request", "fragment"),
        ({"sha256": sha, "sha512": "a" * 128}, 400, "invalid_request", "exactly one of sha256 and sha512"),
        ({"sha256": "xyz"}, 400, "invalid_request", "sha256"),
        ({"url": good.replace(".qcow2", ".img")}, 400, "invalid_request", "format is required"),
        (
            {"url": good.replace("127.0.0.1", "localhost")},
            400,
            "download_not_allowed",
            "host 'localhost' is not in this agent's download_hosts",
        ),
        ({"sha256": "0" * 64}, 422, "checksum_mismatch", f"expected {'0' * 64}"),
        ({"url": f"{image_server.url}/nothing.qcow2"}, 400, "download_failed", "answered 404"),
    ]
    for change, status, slug, text in cases:
        body = {"sha256": sha, **base, **change}
        if "sha512" in change:
            body["sha256"] = sha
        reply = from_url(api, stack, **body)
        assert (reply.status, reply.error) == (status, slug), (change, reply)
        assert text in reply.message, (change, reply.message)
    assert [s.path for s in image_server.seen] == ["cloud.qcow2", "nothing.qcow2"]  # checksum, 404 only
    assert_nothing_left(stack, name, staged, vms)

"""A template made from a volume already on a PVE storage (contract 6.5, POST
/templates/from-volume), over real HTTP: an ``import`` content qcow2 and a stopped VM's disk
image become templates whose disks are the volume's (qemu-img compare) on the import node and
on the node they are synced to; the volume is left as it was. An unknown volume, another
content type, a hostile volume id and a running VM's disk are refused and leave nothing."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.coordinator.conftest import NODE, SourceVm
from tests.support import images
from tests.support.api import Api
from tests.support.source_vms import (
    create_vm,
    destroy_vm,
    free_vmid,
    run_task,
    same_disk,
    sha256,
    template_disk,
)
from tests.support.syncs import wait_tasks
from tests.support.uploads import (
    all_vmids,
    assert_nothing_left,
    import_dir,
    node_ids,
    rows_named,
    shared_volume,
    staged_files,
    storage_id,
    wait_import,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def import_volume(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A qcow2 in pve-node1's ``local`` import content: (its volume id, its file)."""
    name = f"{_name('cloud')}.qcow2"
    folder = import_dir(stack, NODE, "local")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    shutil.copyfile(images.qcow2(tmp_path / name, size_mib=24, data_mib=4, seed=11), path)
    yield f"local:import/{name}", path
    path.unlink(missing_ok=True)


def from_volume(api: Api, stack: Stack, **body: Any) -> Any:
    body.setdefault("cluster_id", stack.cluster_id)
    return api.post("/templates/from-volume", json=body)


def _imported_and_synced(api: Api, stack: Stack, data: dict[str, Any], source: Path) -> dict[str, Any]:
    """The template imported on pve-node1 and synced to pve-node2, each disk the source's;
    the template's details."""
    details: dict[str, Any] = wait_import(api, data["template_id"])
    [task] = wait_tasks(api, data["template_id"])
    assert task["status"] == "completed", task
    instances = api.get(f"/templates/{data['template_id']}/instances").ok()["instances"]
    assert sorted(i["node_name"] for i in instances) == [NODE, "pve-node2"]
    for inst in instances:
        assert inst["status"] == "available", inst
        disk = template_disk(stack, inst["node_name"], inst["vmid"])
        assert same_disk(source, "qcow2", disk, "raw"), f"template disk on {inst['node_name']} differs"
    return details


def test_an_import_volume_becomes_a_template_synced_to_another_node(
    stack: Stack, api: Api, import_volume: tuple[str, Path]
) -> None:
    volid, path = import_volume
    nodes, name, before = node_ids(api, stack), _name("from-volume"), sha256(path)
    data = from_volume(
        api,
        stack,
        node_id=nodes[NODE],
        volume=volid,
        template_name=name,
        description="from an import volume",
        storage_id=storage_id(api, stack, "local", NODE),
        sync_node_ids=[nodes["pve-node2"]],
    ).ok()
    assert data["import_node"] == {"node_id": nodes[NODE], "node_name": NODE}
    info = _imported_and_synced(api, stack, data, path)["upload_info"]
    assert info["file_name"] == path.name and info["status"] == "imported"
    assert sha256(path) == before, "the volume changed"
    assert [f for f in staged_files(stack) if ".part" in f] == []


def test_a_stopped_vms_disk_volume_becomes_a_template(stack: Stack, api: Api, source_vm: SourceVm) -> None:
    nodes, vmid, before = node_ids(api, stack), source_vm.vmid, source_vm.state()
    data = from_volume(
        api,
        stack,
        node_id=nodes[NODE],
        volume=f"local:{vmid}/vm-{vmid}-disk-0.qcow2",
        template_name=_name("disk-volume"),
        storage_id=storage_id(api, stack, "local", NODE),
        sync_node_ids=[nodes["pve-node2"]],
    ).ok()
    _imported_and_synced(api, stack, data, source_vm.disk)
    assert source_vm.state() == before, "the source VM changed"


def test_a_shared_disk_volume_is_copied_by_another_nodes_agent_once_its_vm_stops(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    """A VM on pve-node1 whose disk is on the shared ceph-storage: pve-node2's agent sees the
    volume too, and refuses it while the VM runs on pve-node1."""
    nodes, vmid = node_ids(api, stack), free_vmid(stack)
    create_vm(
        stack,
        NODE,
        vmid,
        images.qcow2(tmp_path / "shared.qcow2", size_mib=16, data_mib=2, seed=13),
        "ceph-storage",
    )
    body = {
        "node_id": nodes["pve-node2"],
        "volume": f"ceph-storage:vm-{vmid}-disk-0",
        "template_name": _name("shared-disk"),
        "storage_id": storage_id(api, stack, "ceph-storage"),
    }
    try:
        run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{vmid}/status/start")
        reply = from_volume(api, stack, **body)
        assert (reply.status, reply.error) == (409, "vm_running"), reply
        assert f"VM {vmid}" in reply.message and NODE in reply.message
        run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{vmid}/status/stop")
        data = from_volume(api, stack, **body, wait=True).ok()
        assert (data["is_shared"], data["status"], data["import_node"]["node_name"]) == (
            True,
            "imported",
            "pve-node2",
        )
        instances = api.get(f"/templates/{data['template_id']}/instances").ok()["instances"]
        template = shared_volume(stack, "ceph-storage", f"base-{instances[0]['vmid']}-disk-0")
        source = shared_volume(stack, "ceph-storage", f"vm-{vmid}-disk-0")
        assert same_disk(source, "raw", template, "raw")
    finally:
        destroy_vm(stack, NODE, vmid)


def _hostile(kind: str, folder: Path, secret: Path) -> Path:
    """An import volume that would copy a host file in (or is not what its name says)."""
    if kind == "backing file":
        return images.qcow2_with_backing(folder / f"{_name('backed')}.qcow2", secret)
    if kind == "vmdk extents":
        return images.two_extent_vmdk(folder / f"{_name('extents')}.vmdk")
    return images.qcow2(folder / f"{_name('renamed')}.raw", size_mib=4, data_mib=1)  # a qcow2 named .raw


@pytest.mark.parametrize("kind", ["backing file", "vmdk extents", "qcow2 named raw"])
def test_a_hostile_import_volume_is_refused_before_it_is_copied(
    stack: Stack, api: Api, tmp_path: Path, kind: str
) -> None:
    nodes, name = node_ids(api, stack), _name("hostile")
    secret = images.qcow2(tmp_path / "host-secret.qcow2", size_mib=4, data_mib=1)
    folder = import_dir(stack, NODE, "local")
    folder.mkdir(parents=True, exist_ok=True)
    staged, vms = staged_files(stack), all_vmids(stack)
    before = {p.name for p in folder.iterdir()}
    volume = _hostile(kind, folder, secret)
    try:
        reply = from_volume(
            api,
            stack,
            node_id=nodes[NODE],
            volume=f"local:import/{volume.name}",
            template_name=name,
            storage_id=storage_id(api, stack, "local", NODE),
        )
        assert (reply.status, reply.error) == (422, "image_rejected"), reply
        assert_nothing_left(stack, name, staged, vms)
    finally:
        for made in set(p.name for p in folder.iterdir()) - before:
            (folder / made).unlink()


def test_unknown_hostile_and_wrong_volumes_are_refused_and_leave_nothing(
    stack: Stack, api: Api, source_vm: SourceVm, import_volume: tuple[str, Path]
) -> None:
    nodes, vmid = node_ids(api, stack), source_vm.vmid
    volid, _ = import_volume
    base = {"node_id": nodes[NODE], "storage_id": storage_id(api, stack, "local", NODE)}
    local2 = storage_id(api, stack, "local", "pve-node2")
    name = _name("bad-volume")
    staged, vms = staged_files(stack), all_vmids(stack)
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"volume": "local:import/nosuch.qcow2"}, 404, "volume_not_found", "nosuch.qcow2"),
        ({"volume": "nosuch:import/a.qcow2"}, 404, "volume_not_found", "nosuch"),
        ({"volume": f"local:{vmid}/vm-{vmid}-disk-9.qcow2"}, 404, "volume_not_found", "disk-9"),
        # pve-node2's own local storage has no such file: the volume is pve-node1's.
        (
            {"volume": volid, "node_id": nodes["pve-node2"], "storage_id": local2},
            404,
            "volume_not_found",
            "pve-node2",
        ),
        ({"volume": volid, "node_id": nodes["pve-node2"]}, 400, "storage_missing_on_node", "pve-node2"),
        ({"volume": "local:iso/debian.iso"}, 400, "invalid_request", "content type iso"),
        ({"volume": "local-lvm:import/a.qcow2"}, 400, "disk_not_exportable", "holds no import content"),
        (
            {"volume": "local:backup/vzdump-qemu-100-2025_01_01-00_00_00.vma.zst"},
            400,
            "invalid_request",
            "backup",
        ),
        ({"volume": "local:import/../../../etc/shadow.raw"}, 400, "invalid_request", "'..'"),
        ({"volume": "local:/etc/shadow"}, 400, "invalid_request", "volume"),
        ({"volume": f"{volid},import-from=/etc/shadow"}, 400, "invalid_request", "volume"),
        ({"volume": "local:import/a\x00.qcow2"}, 400, "invalid_request", "volume"),
        ({"volume": "local:import/a.ova"}, 400, "invalid_request", "volume"),
        ({"volume": volid, "vmid": vmid}, 400, "invalid_request", "vmid"),
        ({"volume": volid, "template_name": None}, 400, "invalid_request", "template_name"),
        ({"volume": volid, "sync_node_ids": [nodes[NODE]]}, 400, "sync_node_is_source", NODE),
    ]
    for change, status, slug, text in cases:
        reply = from_volume(api, stack, **{**base, "template_name": name, **change})
        assert (reply.status, reply.error) == (status, slug), (change, reply)
        assert text in reply.message, (change, reply.message)
    # A running VM's disk: its copy would not be consistent.
    run_task(stack, NODE, "POST", f"/nodes/{NODE}/qemu/{vmid}/status/start")
    reply = from_volume(api, stack, **base, template_name=name, volume=f"local:{vmid}/vm-{vmid}-disk-0.qcow2")
    assert (reply.status, reply.error) == (409, "vm_running"), reply
    assert f"VM {vmid}" in reply.message
    assert rows_named(stack, name).uploads == []
    assert_nothing_left(stack, name, staged, vms)

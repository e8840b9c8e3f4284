"""PVE's clone as the emulator does it, against qemu-server's API2/Qemu.pm clone_vm and the
pve-storage plugins' feature tables (pvesim/storage.py cites them): which storages make
linked clones and of what, `target` only with shared storage, progress in a full clone's
task log, VMIDs unique across the cluster, and templates whose base volume a linked clone
uses kept (where PVE can tell). Besides the demo's storages, this cluster has a ZFS pool,
an LVM (thick) volume group and a directory storage whose default format is qcow2.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from pvesim.state import Cluster
from tests.pvesim.conftest import CLUSTER_NAME, NODES, Emulator, start_emulator, wait_task
from tests.support import images

NODE, OTHER = NODES[0], NODES[1]
EXTRA_STORAGE = {
    "local-zfs": {"type": "zfspool", "pool": "rpool/data", "sparse": 1, "content": "images,rootdir"},
    "lvm-thick": {"type": "lvm", "vgname": "vmdata", "content": "images,rootdir"},
    "local-qcow2": {"type": "dir", "path": "/var/lib/vz2", "format": "qcow2", "content": "images"},
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("pvesim-clones") / "state"
    Cluster.initialise(state, CLUSTER_NAME, len(NODES))
    config = json.loads((state / "config.json").read_text())
    config["storage"].update(EXTRA_STORAGE)
    (state / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    emu = start_emulator(state)
    yield emu
    emu.proc.stop()


@pytest.fixture(scope="module")
def pve(emulator: Emulator) -> ProxmoxAPI:
    return emulator.https()


_next = iter(range(800, 999))


def template(pve: ProxmoxAPI, scsi0: str, node: str = NODE) -> tuple[int, str]:
    """A new VM with one small disk, made a template: (VMID, its disk's volume)."""
    vmid = next(_next)
    assert wait_task(pve, pve.nodes(node).qemu.post(vmid=vmid, scsi0=scsi0))["exitstatus"] == "OK"
    assert wait_task(pve, pve.nodes(node).qemu(vmid).template.post())["exitstatus"] == "OK"
    config = pve.nodes(node).qemu(vmid).config.get()
    assert config["template"] == 1
    return vmid, str(config["scsi0"]).split(",")[0]


def clone(pve: ProxmoxAPI, source: int, node: str = NODE, **params: Any) -> tuple[int, dict[str, Any]]:
    newid = next(_next)
    upid = pve.nodes(node).qemu(source).clone.post(newid=newid, **params)
    return newid, wait_task(pve, upid, 60)


def refused(call: Any, **params: Any) -> str:
    with pytest.raises(ResourceException) as exc:
        call(**params)
    return str(exc.value)


LINKED = [
    ("local:0.01", "local:{t}/base-{t}-disk-0.raw/{n}/vm-{n}-disk-0.qcow2"),
    ("local:0.01,format=qcow2", "local:{t}/base-{t}-disk-0.qcow2/{n}/vm-{n}-disk-0.qcow2"),
    ("local:0.01,format=vmdk", "local:{t}/base-{t}-disk-0.vmdk/{n}/vm-{n}-disk-0.qcow2"),
    ("local-qcow2:0.01", "local-qcow2:{t}/base-{t}-disk-0.qcow2/{n}/vm-{n}-disk-0.qcow2"),
    ("nfs-templates:0.01", "nfs-templates:{t}/base-{t}-disk-0.raw/{n}/vm-{n}-disk-0.qcow2"),
    ("local-lvm:0.01", "local-lvm:vm-{n}-disk-0"),
    ("ceph-storage:0.01", "ceph-storage:base-{t}-disk-0/vm-{n}-disk-0"),
    ("local-zfs:0.01", "local-zfs:base-{t}-disk-0/vm-{n}-disk-0"),
]


@pytest.mark.parametrize(("disk", "expected"), LINKED, ids=[d for d, _ in LINKED])
def test_linked_clone_of_a_base_volume(pve: ProxmoxAPI, emulator: Emulator, disk: str, expected: str) -> None:
    source, base = template(pve, disk)
    assert ":base-" in base or "/base-" in base  # template_create made it a base volume
    newid, status = clone(pve, source, full=0, name="linked")
    assert status["exitstatus"] == "OK", status
    config = pve.nodes(NODE).qemu(newid).config.get()
    assert str(config["scsi0"]).split(",")[0] == expected.format(t=source, n=newid)
    storage = disk.split(":")[0]
    listed = {v["volid"] for v in pve.nodes(NODE).storage(storage).content.get(vmid=newid)}
    assert listed == {expected.format(t=source, n=newid)}  # the base shows in the name, as PVE lists it
    if ".qcow2" in expected:  # a qcow2 overlay backed by the base volume
        path = pve.nodes(NODE).storage(storage).content(config["scsi0"].split(",")[0]).get()["path"]
        assert Path(path).is_file()


def test_lvm_thick_template_has_no_base_volume_and_clones_in_full_only(pve: ProxmoxAPI) -> None:
    """LVMPlugin.pm: its 'template' and 'clone' features are commented out. template_create
    skips the disk (the VM is a template, its volume unchanged); a linked clone is refused
    before any task starts; a full clone copies ('copy' feature)."""
    source, volume = template(pve, "lvm-thick:0.01")
    assert volume == f"lvm-thick:vm-{source}-disk-0"
    message = refused(pve.nodes(NODE).qemu(source).clone.post, newid=next(_next), full=0)
    assert f"Linked clone feature is not supported for 'lvm-thick:vm-{source}-disk-0' (scsi0)" in message
    newid, status = clone(pve, source, full=1)
    assert status["exitstatus"] == "OK", status
    assert pve.nodes(NODE).qemu(newid).config.get()["scsi0"].startswith(f"lvm-thick:vm-{newid}-disk-0,")
    # a full clone of another template onto LVM (thick) storage
    other, _ = template(pve, "local-lvm:0.01")
    newid, status = clone(pve, other, full=1, storage="lvm-thick")
    assert status["exitstatus"] == "OK", status
    assert pve.nodes(NODE).qemu(newid).config.get()["scsi0"].startswith(f"lvm-thick:vm-{newid}-disk-0,")


def test_linked_clone_only_of_a_template(pve: ProxmoxAPI) -> None:
    vmid = next(_next)
    wait_task(pve, pve.nodes(NODE).qemu.post(vmid=vmid, scsi0="local-lvm:0.01"))
    message = refused(pve.nodes(NODE).qemu(vmid).clone.post, newid=next(_next), full=0)
    assert f"Linked clone feature is not supported for 'local-lvm:vm-{vmid}-disk-0' (scsi0)" in message
    source, _ = template(pve, "local-lvm:0.01")
    message = refused(pve.nodes(NODE).qemu(source).clone.post, newid=next(_next), full=0, storage="local")
    assert "parameter 'storage' not allowed for linked clones" in message


def test_target_node_only_with_shared_storage(pve: ProxmoxAPI) -> None:
    local, _ = template(pve, "local-lvm:0.01")
    message = refused(pve.nodes(NODE).qemu(local).clone.post, newid=next(_next), target=OTHER)
    assert f"can't clone VM to node '{OTHER}' (VM uses local storage)" in message
    shared, _ = template(pve, "ceph-storage:0.01")
    message = refused(
        pve.nodes(NODE).qemu(shared).clone.post, newid=next(_next), target=OTHER, full=1, storage="local"
    )
    assert "can't clone to non-shared storage 'local'" in message
    newid, status = clone(pve, shared, target=OTHER, full=0)
    assert status["exitstatus"] == "OK", status
    assert newid in [int(vm["vmid"]) for vm in pve.nodes(OTHER).qemu.get()]
    assert newid not in [int(vm["vmid"]) for vm in pve.nodes(NODE).qemu.get()]


def test_full_clone_logs_its_progress(pve: ProxmoxAPI, emulator: Emulator) -> None:
    source, _ = template(pve, "local-lvm:0.03")
    newid, status = clone(pve, source, full=1, storage="local")
    assert status["exitstatus"] == "OK", status
    lines = [entry["t"] for entry in pve.nodes(NODE).tasks(status["upid"]).log.get(limit=1000)]
    assert lines[0] == f"creating a clone of VM {source} with ID {newid}"
    assert f"create full clone of drive scsi0 (local-lvm:base-{source}-disk-0)" in lines
    assert f"allocated target volume 'local:{newid}/vm-{newid}-disk-0.raw'" in lines
    transferred = [line for line in lines if line.startswith("transferred ")]
    assert transferred and transferred[-1].endswith("(100.00%)"), lines


def test_vmid_is_unique_across_the_cluster(pve: ProxmoxAPI) -> None:
    source, _ = template(pve, "local-lvm:0.01")
    taken = next(_next)
    wait_task(pve, pve.nodes(OTHER).qemu.post(vmid=taken, name="elsewhere"))
    message = refused(pve.nodes(NODE).qemu(source).clone.post, newid=taken)
    assert f"unable to create VM {taken}: config file already exists" in message
    assert pve.nodes(OTHER).qemu(taken).config.get()["name"] == "elsewhere"


@pytest.mark.parametrize("disk", ["local:0.01", "ceph-storage:0.01", "local-zfs:0.01"])
def test_template_whose_base_a_linked_clone_uses_is_kept(pve: ProxmoxAPI, disk: str) -> None:
    source, base = template(pve, disk)
    newid, _ = clone(pve, source, full=0)
    status = wait_task(pve, pve.nodes(NODE).qemu(source).delete(purge=1))
    assert status["exitstatus"] == f"base volume '{base}' is still in use by linked cloned"
    assert pve.nodes(NODE).qemu(source).config.get()["template"] == 1
    storage, volname = base.split(":", 1)
    upid = pve.nodes(NODE).storage(storage).content(volname).delete()  # a task (imgdel)
    assert f"base volume '{volname}' is still in use by linked clones" in wait_task(pve, upid)["exitstatus"]
    wait_task(pve, pve.nodes(NODE).qemu(newid).delete(purge=1))
    assert wait_task(pve, pve.nodes(NODE).qemu(source).delete(purge=1))["exitstatus"] == "OK"


def test_lvmthin_template_goes_and_its_linked_clone_stays(pve: ProxmoxAPI) -> None:
    """LvmThinPlugin.pm: a linked clone's name does not name its base, and LVM-thin lets the
    base go without harm to the clone: PVE destroys such a template."""
    source, _ = template(pve, "local-lvm:0.01")
    newid, _ = clone(pve, source, full=0)
    assert wait_task(pve, pve.nodes(NODE).qemu(source).delete(purge=1))["exitstatus"] == "OK"
    volume = pve.nodes(NODE).qemu(newid).config.get()["scsi0"].split(",")[0]
    assert Path(pve.nodes(NODE).storage("local-lvm").content(volume).get()["path"]).is_file()


def test_clones_of_one_template_run_side_by_side(
    pve: ProxmoxAPI, pvesh: ProxmoxAPI, emulator: Emulator, tmp_path: Path
) -> None:
    """A stopped source is only share-locked (clone_vm's lock_config_shared)."""
    image = images.raw_with_data(tmp_path / "data.raw", 16, 16)
    source = next(_next)
    pvesh.nodes(NODE).qemu.create(vmid=source, scsi0=f"local-lvm:0,import-from={image}", template=1)
    emulator.control("POST", "/settings", {"import_rate_limit": 8 << 20})  # 16 MiB: ~2 s each
    try:
        results: list[dict[str, Any]] = []

        def one() -> None:
            results.append(clone(pve, source, full=1)[1])

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        emulator.control("POST", "/settings", {"import_rate_limit": 0})
    assert [r["exitstatus"] for r in results] == ["OK", "OK"], results
    # they overlapped: the second started before the first ended (UPIDs carry hex start times)
    starts = sorted(int(r["upid"].split(":")[4], 16) for r in results)
    assert starts[1] - starts[0] < 2

"""Upload and import over real HTTP: the guide's scenario 1 (Ceph/RBD), local storage, wait=true,
a race for one name, and a coordinator restarted in the middle of an import."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

from demo.stack import Stack
from tests.support import images
from tests.support.api import Api, Reply
from tests.support.uploads import (
    detail,
    emulator,
    local_image_dir,
    node_ids,
    rows_named,
    shared_volume,
    staged_files,
    storage_id,
    upload,
    vm_conf,
    wait_for,
    wait_import,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.mark.mariadb
def test_scenario1_shared_ceph_upload_imports_once_for_every_node(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "ubuntu-22.04-cloud.qcow2", size_mib=48, data_mib=6)
    name = _name("ubuntu-22.04")
    ceph = storage_id(api, stack, "ceph-storage")
    nodes = node_ids(api, stack)

    reply = upload(api, stack, image, name, ceph, description="Ubuntu 22.04 LTS")
    data = reply.ok()
    template_id, upload_id = data["template_id"], data["upload_id"]
    assert isinstance(template_id, int) and template_id > 0
    assert isinstance(upload_id, int) and upload_id > 0
    assert data["storage_type"] == "rbd"
    assert data["is_shared"] is True
    import_node = data["import_node"]
    assert set(import_node) == {"node_id", "node_name"}
    assert nodes[import_node["node_name"]] == import_node["node_id"]
    assert data["sync_tasks"] == []

    d = wait_import(api, template_id)
    assert {k: d[k] for k in ("id", "template_name", "cluster_id", "cluster_name", "description")} == {
        "id": template_id,
        "template_name": name,
        "cluster_id": stack.cluster_id,
        "cluster_name": "pve-demo",
        "description": "Ubuntu 22.04 LTS",
    }
    info = d["upload_info"]
    assert {
        k: info[k] for k in ("upload_id", "storage_name", "is_shared", "file_name", "file_size", "status")
    } == {
        "upload_id": upload_id,
        "storage_name": "ceph-storage",
        "is_shared": True,
        "file_name": "ubuntu-22.04-cloud.qcow2",
        "file_size": image.stat().st_size,
        "status": "imported",
    }
    instances = d["instances"]
    # One instance per node that sees the storage (ceph-storage: all of them), primary first.
    assert sorted(i["node_name"] for i in instances) == sorted(nodes)
    assert instances[0]["is_primary"] is True
    assert instances[0]["node_name"] == import_node["node_name"]
    assert [i["is_primary"] for i in instances[1:]] == [False] * (len(nodes) - 1)
    vmid = instances[0]["vmid"]
    assert 9000 <= vmid <= 9999
    for inst in instances:
        assert set(inst) == {
            "instance_id",
            "node_id",
            "node_name",
            "vmid",
            "storage_name",
            "status",
            "is_primary",
        }
        assert inst["node_id"] == nodes[inst["node_name"]]
        assert inst["vmid"] == vmid
        assert inst["storage_name"] == "ceph-storage"
        assert inst["status"] == "available"
    assert len({i["instance_id"] for i in instances}) == len(instances)

    listed = api.get(f"/templates/{template_id}/instances").ok()
    assert listed == {
        "template_id": template_id,
        "template_name": name,
        "total": len(nodes),
        "instances": instances,
    }
    # Without include_instances there is no instances key at all.
    assert "instances" not in api.get(f"/templates/{template_id}/detail").ok()

    # In PVE: one VM, a template, whose disk is the base volume on the shared storage.
    conf = vm_conf(stack, import_node["node_name"], vmid)
    assert conf is not None, f"VM {vmid} not on {import_node['node_name']}"
    assert conf["template"] == "1"
    assert conf["scsi0"].split(",")[0] == f"ceph-storage:base-{vmid}-disk-0"
    assert [n for n in nodes if n != import_node["node_name"] and vm_conf(stack, n, vmid)] == []
    disk = shared_volume(stack, "ceph-storage", f"base-{vmid}-disk-0")
    same = images.compare(image, "qcow2", disk, "raw")
    assert same.returncode == 0, same.stdout + same.stderr
    # The shared storage holds the disk now: the staged copy on the import node goes.
    wait_for(lambda: rows_named(stack, name).uploads[0].staged_name == "", what="staged copy removed")
    assert [f for f in staged_files(stack) if f.split("/")[1].startswith(f"upload-{upload_id}-")] == []


def test_local_storage_upload_has_one_primary_instance_on_its_node(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "debian-12.qcow2", size_mib=32, data_mib=4, seed=2)
    name = _name("debian-12")
    local1 = storage_id(api, stack, "local", "pve-node1")
    nodes = node_ids(api, stack)

    data = upload(api, stack, image, name, local1, description="Debian 12").ok()
    assert data == {
        "template_id": data["template_id"],
        "upload_id": data["upload_id"],
        "storage_type": "dir",
        "is_shared": False,
        "import_node": {"node_id": nodes["pve-node1"], "node_name": "pve-node1"},
        "sync_tasks": [],
        "status": "uploaded",
        "error_message": None,
    }
    d = wait_import(api, data["template_id"])
    assert d["upload_info"]["status"] == "imported", d["upload_info"]
    assert d["upload_info"]["is_shared"] is False and d["upload_info"]["storage_name"] == "local"
    (inst,) = d["instances"]
    vmid = inst["vmid"]
    assert inst == {
        "instance_id": inst["instance_id"],
        "node_id": nodes["pve-node1"],
        "node_name": "pve-node1",
        "vmid": vmid,
        "storage_name": "local",
        "status": "available",
        "is_primary": True,
    }
    assert 9000 <= vmid <= 9999
    conf = vm_conf(stack, "pve-node1", vmid)
    assert conf is not None and conf["template"] == "1"
    disks = sorted(local_image_dir(stack, "pve-node1", "local", vmid).iterdir())
    assert [p.name for p in disks] == [f"base-{vmid}-disk-0.raw"]
    assert conf["scsi0"].split(",")[0] == f"local:{vmid}/base-{vmid}-disk-0.raw"
    same = images.compare(image, "qcow2", disks[0], "raw")
    assert same.returncode == 0, same.stdout + same.stderr


@pytest.mark.parametrize("how", ["form field", "query parameter"])
def test_wait_true_answers_after_the_import(stack: Stack, api: Api, tmp_path: Path, how: str) -> None:
    image = images.qcow2(tmp_path / "alma9.qcow2", size_mib=16, data_mib=2, seed=3)
    name = _name("alma9")
    ceph = storage_id(api, stack, "ceph-storage")
    if how == "form field":
        data = upload(api, stack, image, name, ceph, wait="true").ok()
    else:
        data = upload(api, stack, image, name, ceph, query="?wait=true").ok()
    assert data["status"] == "imported" and data["error_message"] is None
    # Nothing left to wait for: the answer came after the import.
    d = detail(api, data["template_id"])
    assert d["upload_info"]["status"] == "imported"
    assert {i["status"] for i in d["instances"]} == {"available"}


@pytest.mark.mariadb
def test_two_uploads_of_one_name_one_wins(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "race.qcow2", size_mib=16, data_mib=2, seed=4)
    name = _name("race")
    ceph = storage_id(api, stack, "ceph-storage")
    replies: list[Reply] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        replies.append(upload(api.as_token(api.token), stack, image, name, ceph))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
    won = next(r for r in replies if r.status == 200).data
    lost = next(r for r in replies if r.status == 409)
    assert lost.error == "template_name_taken"
    assert name in lost.message
    assert wait_import(api, won["template_id"])["upload_info"]["status"] == "imported"
    rows = rows_named(stack, name)
    assert [t.id for t in rows.templates] == [won["template_id"]]
    # The loser made at most a failed upload record, never a second live one.
    assert [u.id for u in rows.uploads if u.status != "failed"] == [won["upload_id"]]


@pytest.mark.mariadb
def test_coordinator_restart_during_import_finishes_it(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "slow.qcow2", size_mib=16, data_mib=4, seed=5)
    name = _name("slow")
    ceph = storage_id(api, stack, "ceph-storage")
    # 16 MiB (qemu-img's rate limit counts zeroes too) at 2 MiB/s: PVE's convert runs for ~8 s.
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 2 << 20})
    try:
        data = upload(api, stack, image, name, ceph).ok()
        deadline = time.monotonic() + 30
        while True:
            info = detail(api, data["template_id"])["upload_info"]
            if info["status"] == "importing" and info["import_progress"] > 0:
                break
            assert info["status"] in ("uploaded", "importing"), info
            assert time.monotonic() < deadline, f"the import never got going: {info}"
            time.sleep(0.2)
        vmid_before = info["vmid"]
        assert stack.coordinator is not None
        stack.coordinator.stop()
        # The coordinator is gone while PVE is still converting the disk.
        conf = vm_conf(stack, data["import_node"]["node_name"], vmid_before)
        assert conf is None or conf.get("template") != "1", "the import finished before the stop"
        stack.start_coordinator()
    finally:
        # The running qemu-img keeps its rate; only later imports are affected.
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    d = wait_import(api, data["template_id"], timeout=90)
    assert d["upload_info"]["status"] == "imported", d["upload_info"]
    assert d["upload_info"]["error_message"] is None
    # The same import was picked up again, not a second one started.
    vmid = d["upload_info"]["vmid"]
    assert vmid == vmid_before
    assert {i["status"] for i in d["instances"]} == {"available"}
    assert {i["vmid"] for i in d["instances"]} == {vmid}
    conf = vm_conf(stack, d["upload_info"]["import_node_name"], vmid)
    assert conf is not None and conf["template"] == "1"
    same = images.compare(image, "qcow2", shared_volume(stack, "ceph-storage", f"base-{vmid}-disk-0"), "raw")
    assert same.returncode == 0, same.stdout + same.stderr
    # The job's lease is released just after the status is written.
    released = [("imported", None)]
    wait_for(
        lambda: [(u.status, u.lease_owner) for u in rows_named(stack, name).uploads] == released, 10, "lease"
    )

"""VM snapshots and start/stop in the emulator, as PVE's API does them: a snapshot is a
config section plus an internal qcow2 snapshot of every disk (dir storage: qcow2 only), the
VM's ``parent`` names the newest; a running VM says so and cannot be destroyed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.pvesim.conftest import NODES, task_log, wait_task
from tests.pvesim.test_pvesh import volume_path

NODE = NODES[0]


def _snapshots_in(path: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", "-U", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [s["name"] for s in json.loads(out).get("snapshots", [])]


def _ok(api: ProxmoxAPI, upid: str) -> None:
    assert wait_task(api, upid)["exitstatus"] == "OK", task_log(api, upid)


def test_snapshot_of_a_qcow2_vm_and_its_config(pvesh: ProxmoxAPI, qcow2_image: Path) -> None:
    vmid = 760
    vm = pvesh.nodes(NODE).qemu(vmid)
    _ok(
        pvesh,
        pvesh.nodes(NODE).qemu.create(
            vmid=vmid, memory=512, scsi0=f"local:0,import-from={qcow2_image},format=qcow2"
        ),
    )
    disk = volume_path(pvesh, vm.config.get()["scsi0"].split(",")[0])

    _ok(pvesh, vm.snapshot.post(snapname="first", description="before the update"))
    _ok(pvesh, vm.snapshot.post(snapname="second"))
    listed = {s["name"]: s for s in vm.snapshot.get()}
    assert set(listed) == {"first", "second", "current"}
    assert listed["first"]["description"] == "before the update"
    assert listed["second"]["parent"] == "first" and "parent" not in listed["first"]
    assert listed["current"]["parent"] == "second" and listed["current"]["running"] == 0
    assert isinstance(listed["first"]["snaptime"], int)
    assert _snapshots_in(disk) == ["first", "second"]
    assert vm.config.get(snapshot="first")["scsi0"] == vm.config.get()["scsi0"]
    assert "lock" not in vm.config.get()

    failed = wait_task(pvesh, vm.snapshot.post(snapname="first"))
    assert failed["exitstatus"] == "snapshot name 'first' already used"
    with pytest.raises(ResourceException, match="reserved name"):
        vm.snapshot.post(snapname="current")
    with pytest.raises(ResourceException, match="snapshot 'nosuch' does not exist"):
        vm.config.get(snapshot="nosuch")

    _ok(pvesh, vm.snapshot("first").delete())
    listed = {s["name"]: s for s in vm.snapshot.get()}
    assert set(listed) == {"second", "current"} and "parent" not in listed["second"]
    assert _snapshots_in(disk) == ["second"]
    _ok(pvesh, vm.delete())


def test_raw_disks_on_dir_storage_have_no_snapshots(pvesh: ProxmoxAPI, qcow2_image: Path) -> None:
    vmid = 761
    _ok(
        pvesh, pvesh.nodes(NODE).qemu.create(vmid=vmid, scsi0=f"local:0,import-from={qcow2_image},format=raw")
    )
    upid = pvesh.nodes(NODE).qemu(vmid).snapshot.post(snapname="s1")
    status = wait_task(pvesh, upid)
    assert status["exitstatus"] == "snapshot feature is not available"
    assert "lock" not in pvesh.nodes(NODE).qemu(vmid).config.get()
    _ok(pvesh, pvesh.nodes(NODE).qemu(vmid).delete())


def test_a_started_vm_runs_until_stopped(pvesh: ProxmoxAPI, qcow2_image: Path) -> None:
    vmid = 762
    vm = pvesh.nodes(NODE).qemu(vmid)
    _ok(
        pvesh,
        pvesh.nodes(NODE).qemu.create(vmid=vmid, scsi0=f"local:0,import-from={qcow2_image},format=qcow2"),
    )
    _ok(pvesh, vm.status.start.post())
    assert vm.status.current.get()["status"] == "running"
    assert wait_task(pvesh, vm.status.start.post())["exitstatus"] == f"VM {vmid} already running"
    with pytest.raises(ResourceException, match=f"VM {vmid} is running - destroy failed"):
        vm.delete()
    _ok(pvesh, vm.snapshot.post(snapname="live"))  # a running VM's disks can be snapshotted
    _ok(pvesh, vm.status.stop.post())
    assert vm.status.current.get()["status"] == "stopped"
    _ok(pvesh, vm.delete())

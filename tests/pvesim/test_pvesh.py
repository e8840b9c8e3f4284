"""proxmoxer's `local` backend, unmodified, runs the node's `pvesh` shim found in PATH: the
way the agents act on their own node as root (absolute import paths, foreground tasks)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from unittest.mock import ANY

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.pvesim.conftest import NODES, Emulator, task_log

NODE = NODES[0]
UPID_RE = r"UPID:{node}:[0-9A-F]{{8}}:[0-9A-F]{{8}}:[0-9A-F]{{8}}:{type}:{id}:{user}:"
PROGRESS_RE = re.compile(r"transferred \d+\.\d \S+ of 32\.0 MiB \((\d+\.\d\d)%\)")


def run_pvesh(emulator: Emulator, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The shim as a shell user runs it."""
    env = dict(os.environ, PATH=f"{emulator.bin_dir(node)}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["pvesh", *args], env=env, capture_output=True, text=True, timeout=60)


def volume_path(pvesh: ProxmoxAPI, volid: str) -> Path:
    storage = volid.split(":", 1)[0]
    return Path(pvesh.nodes(NODE).storage(storage).content(volid).get()["path"])


def test_shim_is_what_proxmoxer_runs(pvesh: ProxmoxAPI, emulator: Emulator) -> None:
    from shutil import which

    assert which("pvesh") == str(emulator.bin_dir(NODE) / "pvesh")
    assert pvesh.version.get()["version"].startswith("9.")


def test_get_calls(pvesh: ProxmoxAPI) -> None:
    assert sorted(n["node"] for n in pvesh.nodes.get()) == sorted(NODES)
    storages = {s["storage"]: s["shared"] for s in pvesh.nodes(NODE).storage.get()}
    assert storages == {"local": 0, "local-lvm": 0, "ceph-storage": 1, "nfs-templates": 1}
    assert {r["node"] for r in pvesh.cluster.resources.get(type="node")} == set(NODES)
    # the shim answers as its own node
    [me] = [e for e in pvesh.cluster.status.get() if e.get("local")]
    assert me["name"] == NODE


def test_each_node_has_its_own_shim(emulator: Emulator) -> None:
    out = run_pvesh(emulator, NODES[1], "get", "/cluster/status", "--output-format", "json")
    assert out.returncode == 0, out.stderr
    [me] = [e for e in json.loads(out.stdout) if e.get("local")]
    assert me["name"] == NODES[1]


def test_ill_typed_parameter(pvesh: ProxmoxAPI) -> None:
    with pytest.raises(ResourceException) as exc:
        pvesh.cluster.nextid.get(vmid="abc")
    assert exc.value.status_code == 400
    assert exc.value.exit_code == 255
    assert exc.value.content == (
        "400 Parameter verification failed.\nvmid: type check ('integer') failed - got 'abc'\n"
    )


def test_cli_output_and_errors(emulator: Emulator) -> None:
    ok = run_pvesh(emulator, NODE, "get", "/version", "--output-format", "json")
    assert ok.returncode == 0 and ok.stderr == ""
    assert json.loads(ok.stdout)["release"].startswith("9.")
    bad = run_pvesh(emulator, NODE, "get", "/cluster/resources", "-type", "bogus", "--output-format", "json")
    assert (bad.returncode, bad.stdout) == (255, "")
    assert bad.stderr == (
        "400 Parameter verification failed.\n"
        "type: value 'bogus' does not have a value in the enumeration 'vm, storage, node, sdn'\n"
    )
    missing = run_pvesh(emulator, NODE, "get", "/no/such/path")
    assert (missing.returncode, missing.stderr) == (1, "No 'get' handler defined for '/no/such/path'\n")


def test_import_template_and_purge(pvesh: ProxmoxAPI, qcow2_image: Path) -> None:
    """The agent's import: create with an absolute import-from path, convert to a template,
    and later delete with purge."""
    vmid = int(pvesh.cluster.nextid.get())
    upid = pvesh.nodes(NODE).qemu.create(
        vmid=vmid, name="imported", scsi0=f"local:0,import-from={qcow2_image}", ostype="l26"
    )
    assert re.fullmatch(UPID_RE.format(node=NODE, type="qmcreate", id=vmid, user="root@pam"), upid)

    # pvesh ran the task in the foreground: it is over when the call returns
    status = pvesh.nodes(NODE).tasks(upid).status.get()
    assert (status["status"], status["exitstatus"], status["user"]) == ("stopped", "OK", "root@pam")
    log = task_log(pvesh, upid)
    progress = [m.group(1) for line in log if (m := PROGRESS_RE.fullmatch(line))]
    assert progress and progress[-1] == "100.00"
    assert f"scsi0: successfully created disk 'local:{vmid}/vm-{vmid}-disk-0.raw,size=32M'" in log
    assert log[-1] == "TASK OK"

    config = pvesh.nodes(NODE).qemu(vmid).config.get()
    assert config["scsi0"] == f"local:{vmid}/vm-{vmid}-disk-0.raw,size=32M"
    assert (config["name"], config["ostype"]) == ("imported", "l26")
    disk = volume_path(pvesh, f"local:{vmid}/vm-{vmid}-disk-0.raw")
    info = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", str(disk)]))
    assert (info["format"], info["virtual-size"]) == ("raw", 32 << 20)
    # the data arrived (qemu-img compare ignores the format difference)
    subprocess.run(["qemu-img", "compare", str(qcow2_image), str(disk)], check=True, capture_output=True)

    # VMIDs are taken: nextid moves on, and a second create with the same VMID is refused
    assert int(pvesh.cluster.nextid.get()) != vmid
    with pytest.raises(ResourceException) as exc:
        pvesh.cluster.nextid.get(vmid=vmid)
    assert exc.value.status_code == 400
    assert f"vmid: VM {vmid} already exists" in exc.value.content
    with pytest.raises(ResourceException) as exc:
        pvesh.nodes(NODE).qemu.create(vmid=vmid, scsi0="local:0.001")
    assert exc.value.status_code == 500
    assert exc.value.content == f"unable to create VM {vmid} - VM {vmid} already exists on node '{NODE}'\n"

    # template: the disk becomes a read-only base volume
    upid = pvesh.nodes(NODE).qemu(vmid).template.create()
    assert pvesh.nodes(NODE).tasks(upid).status.get()["exitstatus"] == "OK"
    config = pvesh.nodes(NODE).qemu(vmid).config.get()
    assert config["template"] == 1
    assert config["scsi0"] == f"local:{vmid}/base-{vmid}-disk-0.raw,size=32M"
    base = volume_path(pvesh, f"local:{vmid}/base-{vmid}-disk-0.raw")
    assert base.is_file() and not disk.exists()
    assert base.stat().st_mode & 0o222 == 0
    [res] = [r for r in pvesh.cluster.resources.get(type="vm") if r["vmid"] == vmid]
    assert res["template"] == 1
    with pytest.raises(ResourceException) as exc:
        pvesh.nodes(NODE).qemu(vmid).template.create()
    assert exc.value.content == "you can't convert a template to a template\n"

    # delete with purge: config and disk go, the VMID is free again
    upid = pvesh.nodes(NODE).qemu(vmid).delete(purge=1)
    assert pvesh.nodes(NODE).tasks(upid).status.get()["exitstatus"] == "OK"
    assert f"purging VM {vmid} from related configurations.." in task_log(pvesh, upid)
    assert not base.exists()
    assert vmid not in {r["vmid"] for r in pvesh.cluster.resources.get(type="vm")}
    assert pvesh.cluster.nextid.get(vmid=vmid) == str(vmid)


def test_absolute_path_through_an_api_token_is_refused(emulator: Emulator, qcow2_image: Path) -> None:
    # the same call as above, over HTTPS with the (non-privsep) root@pam token
    with pytest.raises(ResourceException) as exc:
        emulator.https().nodes(NODE).qemu.post(vmid=700, scsi0=f"local:0,import-from={qcow2_image}")
    assert exc.value.status_code == 500
    assert exc.value.content.startswith("Only root can pass arbitrary filesystem paths.")
    assert emulator.https().cluster.nextid.get(vmid=700) == "700"


def test_failed_foreground_task(pvesh: ProxmoxAPI, tmp_path: Path) -> None:
    missing = tmp_path / "gone.qcow2"
    upid = pvesh.nodes(NODE).qemu.create(vmid=701, scsi0=f"local:0,import-from={missing}")
    status = pvesh.nodes(NODE).tasks(upid).status.get()
    assert status["exitstatus"] == f"unable to create VM 701 - can't find file '{missing}'"
    assert task_log(pvesh, upid)[-1] == f"TASK ERROR: {status['exitstatus']}"
    # no half-made VM stays behind
    assert pvesh.cluster.nextid.get(vmid=701) == "701"


def test_linked_clone_of_the_template(pvesh: ProxmoxAPI, qcow2_image: Path) -> None:
    pvesh.nodes(NODE).qemu.create(vmid=710, scsi0=f"local:0,import-from={qcow2_image}", template=1)
    config = pvesh.nodes(NODE).qemu(710).config.get()
    # a template created in one go gets its base volume at once
    assert (config["template"], config["scsi0"]) == (1, "local:710/base-710-disk-0.raw,size=32M")
    upid = pvesh.nodes(NODE).qemu(710).clone.create(newid=711, name="linked")
    assert pvesh.nodes(NODE).tasks(upid).status.get()["exitstatus"] == "OK"
    clone = pvesh.nodes(NODE).qemu(711).config.get()
    assert clone["scsi0"] == "local:710/base-710-disk-0.raw/711/vm-711-disk-0.qcow2,size=32M"
    assert clone["name"] == "linked" and "template" not in clone
    # the template cannot go while a clone uses its base volume (QemuServer::destroy_vm)
    upid = pvesh.nodes(NODE).qemu(710).delete()
    status = pvesh.nodes(NODE).tasks(upid).status.get()
    assert (
        status["exitstatus"] == "base volume 'local:710/base-710-disk-0.raw' is still in use by linked cloned"
    )
    assert pvesh.nodes(NODE).qemu(710).config.get()["template"] == 1
    assert volume_path(pvesh, "local:710/base-710-disk-0.raw").is_file()


def test_a_create_whose_worker_crashed_is_left_locked(pvesh: ProxmoxAPI, emulator: Emulator) -> None:
    """A `crash` fault kills the create's worker as an OOM kill or a power loss would: the
    VMID stays reserved by a bare `lock: create` config (no description), the task has no
    verdict, and PVE destroys such a VM only with skiplock (root@pam)."""
    vmid = int(pvesh.cluster.nextid.get())
    emulator.control("POST", "/faults", {"type": "qmcreate", "task_id": str(vmid), "crash": True})
    upid = pvesh.nodes(NODE).qemu.create(vmid=vmid, name="cut-off", description="never written")
    assert pvesh.nodes(NODE).tasks(upid).status.get()["exitstatus"] == "unexpected status"
    assert pvesh.nodes(NODE).qemu(vmid).config.get() == {"lock": "create", "digest": ANY}
    upid = pvesh.nodes(NODE).qemu(vmid).delete(purge=1)
    assert pvesh.nodes(NODE).tasks(upid).status.get()["exitstatus"] == "VM is locked (create)"
    upid = pvesh.nodes(NODE).qemu(vmid).delete(purge=1, skiplock=1)
    assert pvesh.nodes(NODE).tasks(upid).status.get()["exitstatus"] == "OK"
    assert vmid not in [int(vm["vmid"]) for vm in pvesh.nodes(NODE).qemu.get()]

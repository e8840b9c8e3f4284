"""The options a template's vm_config may carry, as the emulator takes them on create (through
the node's pvesh, as the agent runs it): accepted as PVE accepts them, with their volumes
(EFI vars, TPM state, cloud-init drive) allocated, cloned and freed as PVE does."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.pvesim.conftest import NODES, task_log
from tests.pvesim.test_pvesh import volume_path

NODE = NODES[0]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3HdiyHmW3EgJRtDwP4uU3ZpeAyFYGqL8t0zQgT7ls me@host"


def test_a_cloud_template_with_efi_tpm_and_cloud_init(pvesh: ProxmoxAPI, qcow2_image: Path) -> None:
    vmid = 720
    upid = pvesh.nodes(NODE).qemu.create(
        vmid=vmid,
        scsi0=f"local:0,import-from={qcow2_image}",
        bios="ovmf",
        machine="q35",
        cpu="x86-64-v2-AES,flags=+aes;+pcid",
        efidisk0="local:1,efitype=4m,pre-enrolled-keys=1",
        tpmstate0="local:1,version=v2.0",
        ide2="local:cloudinit",
        net0="virtio,bridge=vmbr0,tag=42",
        serial0="socket",
        ipconfig0="ip=10.0.0.5/24,gw=10.0.0.1",
        nameserver="1.1.1.1 9.9.9.9",
        sshkeys=quote(SSH_KEY, safe=""),
        rng0="source=/dev/urandom",
    )
    log = task_log(pvesh, upid)
    assert log[-1] == "TASK OK"
    # drives in sorted order, as PVE's create_disks goes through them
    efi = f"local:{vmid}/vm-{vmid}-disk-0.raw,efitype=4m,pre-enrolled-keys=1,size=528K"
    cloudinit = f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"
    tpm = f"local:{vmid}/vm-{vmid}-disk-2.raw,size=4M,version=v2.0"
    created = [line for line in log if "successfully created disk" in line]
    assert created == [
        f"efidisk0: successfully created disk '{efi}'",
        f"ide2: successfully created disk '{cloudinit}'",
        f"scsi0: successfully created disk 'local:{vmid}/vm-{vmid}-disk-1.raw,size=32M'",
        f"tpmstate0: successfully created disk '{tpm}'",
    ]
    config = pvesh.nodes(NODE).qemu(vmid).config.get()
    assert config["ide2"] == f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"
    # a NIC gets a MAC address on create, printed with its model as PVE does
    assert re.fullmatch(r"virtio=([0-9A-F]{2}:){5}[0-9A-F]{2},bridge=vmbr0,tag=42", config["net0"])
    assert (config["ipconfig0"], config["cpu"]) == (
        "ip=10.0.0.5/24,gw=10.0.0.1",
        "x86-64-v2-AES,flags=+aes;+pcid",
    )
    assert volume_path(pvesh, f"local:{vmid}/vm-{vmid}-disk-0.raw").stat().st_size == 528 << 10

    # template: the disks become base volumes, the cloud-init drive stays as it is
    pvesh.nodes(NODE).qemu(vmid).template.create()
    config = pvesh.nodes(NODE).qemu(vmid).config.get()
    assert config["efidisk0"].startswith(f"local:{vmid}/base-{vmid}-disk-0.raw,")
    assert config["tpmstate0"].startswith(f"local:{vmid}/base-{vmid}-disk-2.raw,")
    assert config["ide2"] == f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"

    # a linked clone gets its own cloud-init drive and TPM state (PVE copies those in full)
    upid = pvesh.nodes(NODE).qemu(vmid).clone.create(newid=721, name="from-template")
    assert task_log(pvesh, upid)[-1] == "TASK OK"
    clone = pvesh.nodes(NODE).qemu(721).config.get()
    assert clone["ide2"] == "local:721/vm-721-cloudinit.qcow2,media=cdrom,size=4M"
    assert clone["tpmstate0"].startswith("local:721/vm-721-disk-")
    assert clone["efidisk0"].startswith(f"local:{vmid}/base-{vmid}-disk-0.raw/721/")

    # destroying a VM frees its cloud-init volume too
    pvesh.nodes(NODE).qemu(721).delete()
    assert (
        not volume_path(pvesh, f"local:{vmid}/vm-{vmid}-cloudinit.qcow2")
        .with_name("vm-721-cloudinit.qcow2")
        .exists()
    )
    assert [v["volid"] for v in pvesh.nodes(NODE).storage("local").content.get(vmid=721)] == []


def test_a_second_cloud_init_drive_is_refused(pvesh: ProxmoxAPI) -> None:
    upid = pvesh.nodes(NODE).qemu.create(vmid=722, ide2="local:cloudinit", sata0="local:cloudinit")
    status = pvesh.nodes(NODE).tasks(upid).status.get()
    assert status["exitstatus"] == (
        "unable to create VM 722 - sata0 - cloud-init drive is already attached at 'ide2'"
    )
    # nothing stays: no VM, no volume
    assert 722 not in {vm["vmid"] for vm in pvesh.nodes(NODE).qemu.get()}
    assert pvesh.nodes(NODE).storage("local").content.get(vmid=722) == []


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"sshkeys": quote("ssh-ed25519 not-a-key", safe="")}, "SSH public key validation error\n"),
        ({"cpu": "host,flags=+avx"}, "VM-specific CPU flags must be a subset of"),
        ({"ipconfig0": "ip=10.0.0.500/24"}, "value does not look like a valid ipv4 network configuration"),
        ({"rng0": "source=/dev/sda"}, "value '/dev/sda' does not have a value in the enumeration"),
    ],
)
def test_values_pve_refuses_are_refused(pvesh: ProxmoxAPI, params: dict[str, str], error: str) -> None:
    with pytest.raises(ResourceException) as caught:
        pvesh.nodes(NODE).qemu.create(vmid=723, **params)
    assert error in str(caught.value.content) + str(caught.value.errors)
    assert 723 not in {vm["vmid"] for vm in pvesh.nodes(NODE).qemu.get()}

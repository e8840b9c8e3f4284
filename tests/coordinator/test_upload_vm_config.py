"""vm_config over real HTTP: what the agent must never run is refused before the file moves,
naming the key, and leaves nothing behind; a rich cloud-template config reaches PVE intact."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from demo.stack import Stack
from tests.support import images
from tests.support.api import Api
from tests.support.uploads import (
    all_vmids,
    assert_nothing_left,
    local_image_dir,
    rows_named,
    staged_files,
    storage_id,
    stream_upload,
    upload,
    upload_count,
    upload_fields,
    vm_conf,
)

MiB = images.MiB
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3HdiyHmW3EgJRtDwP4uU3ZpeAyFYGqL8t0zQgT7ls me@host"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# what was tried against the demo, and what the answer must say; {agent_token} is the path of
# the agent's credential on the node
ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "agent credential imported into a disk": (
        {"sata1": "ceph-storage:0,import-from={agent_token},format=raw"},
        "vm_config sata1: 'import-from' is not allowed",
    ),
    "host file attached as a disk": ({"virtio1": "/tmp/x"}, "vm_config key 'virtio1' is not allowed"),
    "qemu arguments": (
        {"args": "-chardev file,id=f,path=/etc/shadow"},
        "vm_config key 'args' is not allowed",
    ),
    "hook script": ({"hookscript": "local:snippets/hook.pl"}, "vm_config key 'hookscript' is not allowed"),
    "NUL in a vm_config string": (
        {"ciuser": "root\x00admin"},
        "vm_config ciuser must not contain control characters (U+0000 at position 4)",
    ),
    "EFI vars on another storage": (
        {"bios": "ovmf", "efidisk0": "local:1,efitype=4m"},
        "vm_config efidisk0: must be allocated on the template's storage 'ceph-storage', not 'local'",
    ),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_refused_vm_config_is_a_400_naming_the_key_and_leaves_nothing(
    stack: Stack, api: Api, tmp_path: Path, attack: str
) -> None:
    vm_config, message = ATTACKS[attack]
    credential = stack.base / "agents" / "pve-node1" / "credential"
    vm_config = {k: v.format(agent_token=credential) for k, v in vm_config.items()}
    image = images.qcow2(tmp_path / "cloud.qcow2", size_mib=16, data_mib=1)
    name = _name("attack")
    staged, vms, uploads_before = staged_files(stack), all_vmids(stack), upload_count(stack)
    reply = upload(
        api, stack, image, name, storage_id(api, stack, "ceph-storage"), vm_config=json.dumps(vm_config)
    )
    assert reply.status == 400, reply.body
    assert reply.body["code"] == 400 and reply.error == "invalid_request"
    assert message in reply.message, reply.message
    assert message in reply.body["data"]["fields"]["vm_config"]
    # nothing made: no template (over the API too), no upload row, no staged file, no VM
    assert api.get(f"/templates?name={name}").ok()["total"] == 0
    assert rows_named(stack, name).uploads == [] and upload_count(stack) == uploads_before
    assert_nothing_left(stack, name, staged, vms)


def test_a_nul_in_the_description_is_a_400_naming_it(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "cloud.qcow2", size_mib=16, data_mib=1)
    name = _name("nul")
    staged, vms = staged_files(stack), all_vmids(stack)
    reply = upload(
        api, stack, image, name, storage_id(api, stack, "ceph-storage"), description="CentOS\x00 7"
    )
    assert reply.status == 400, reply.body
    assert reply.error == "invalid_request"
    assert reply.message == (
        "invalid form: description must not contain control characters (U+0000 at position 6)"
    )
    assert rows_named(stack, name).uploads == []
    assert_nothing_left(stack, name, staged, vms)


def test_the_refusal_comes_before_the_file_is_read(stack: Stack, api: Api) -> None:
    assert api.token is not None
    name = _name("early")
    staged, vms = staged_files(stack), all_vmids(stack)

    def chunks() -> Iterator[bytes]:
        piece = b"\0" * MiB
        for _ in range(1024):  # a GiB the coordinator must not wait for
            yield piece

    fields = upload_fields(stack, name, storage_id(api, stack, "ceph-storage"))
    fields["vm_config"] = json.dumps({"hookscript": "local:snippets/hook.pl"})
    answer = stream_upload(stack, api.token, fields, "disk.raw", chunks())
    assert answer.status == 400, answer.body
    assert "vm_config key 'hookscript' is not allowed" in answer.body["message"]
    assert not answer.finished_sending and answer.sent < 64 * MiB, answer.sent
    assert_nothing_left(stack, name, staged, vms)


def test_a_rich_cloud_template_config_reaches_pve(stack: Stack, api: Api, tmp_path: Path) -> None:
    image = images.qcow2(tmp_path / "ubuntu-24.04.qcow2", size_mib=32, data_mib=2, seed=5)
    name = _name("ubuntu-cloud")
    vm_config = {
        "cores": 4,
        "memory": 4096,
        "bios": "ovmf",
        "machine": "q35",
        "efidisk0": "local:1,efitype=4m,pre-enrolled-keys=1",
        "ide2": "local:cloudinit",
        "net0": "virtio,bridge=vmbr0,tag=42",
        "serial0": "socket",
        "vga": "serial0",
        "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1",
        "sshkeys": quote(SSH_KEY, safe=""),
        "ciuser": "ubuntu",
        "boot": "order=scsi0;net0",
        "onboot": True,
    }
    data = upload(
        api,
        stack,
        image,
        name,
        storage_id(api, stack, "local", "pve-node1"),
        description="Ubuntu 24.04\ncloud image",
        vm_config=json.dumps(vm_config),
        wait=True,
    ).ok()
    assert data["status"] == "imported", data
    (instance,) = api.get(f"/templates/{data['template_id']}/instances").ok()["instances"]
    vmid = instance["vmid"]

    conf = vm_conf(stack, "pve-node1", vmid)
    assert conf is not None and conf["template"] == "1"
    assert {
        k: conf[k] for k in ("cores", "memory", "bios", "machine", "serial0", "vga", "boot", "onboot")
    } == {
        "cores": "4",
        "memory": "4096",
        "bios": "ovmf",
        "machine": "q35",
        "serial0": "socket",
        "vga": "serial0",
        "boot": "order=scsi0;net0",
        "onboot": "1",
    }
    assert re.fullmatch(r"virtio=([0-9A-F]{2}:){5}[0-9A-F]{2},bridge=vmbr0,tag=42", conf["net0"]), conf[
        "net0"
    ]
    assert (conf["ipconfig0"], conf["sshkeys"], conf["ciuser"]) == (
        "ip=10.0.0.5/24,gw=10.0.0.1",
        quote(SSH_KEY, safe=""),
        "ubuntu",
    )
    # the imported disk, EFI vars and the cloud-init drive: all on the template's storage
    assert conf["scsi0"].split(",")[0] == f"local:{vmid}/base-{vmid}-disk-1.raw"
    assert conf["efidisk0"].startswith(f"local:{vmid}/base-{vmid}-disk-0.raw,efitype=4m,pre-enrolled-keys=1,")
    assert conf["ide2"] == f"local:{vmid}/vm-{vmid}-cloudinit.qcow2,media=cdrom"
    assert sorted(p.name for p in local_image_dir(stack, "pve-node1", "local", vmid).iterdir()) == [
        f"base-{vmid}-disk-0.raw",
        f"base-{vmid}-disk-1.raw",
        f"vm-{vmid}-cloudinit.qcow2",
    ]
    # defaults the upload did not override are there as well
    assert (conf["scsihw"], conf["ostype"], conf["tags"]) == ("virtio-scsi-single", "l26", "pvesphere")

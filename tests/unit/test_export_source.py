"""Which disk an export reads (agent/export_source.pick_disk) and how qemu-img is asked
(agent/exporter.convert_command): the boot disk by default, never a CD-ROM, cloud-init drive
or pass-through device; a snapshot read from inside the qcow2, shared with a running QEMU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.export_source import ExportRefused, Source, pick_disk
from agent.exporter import convert_command
from shared.error_slugs import ErrorSlug
from shared.messages.exports import ExportRequest, ExportSource
from shared.validation import InvalidInput, parse

DISK = "local:100/vm-100-disk-0.qcow2,size=32M"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"scsi0": DISK}, "scsi0"),
        (
            {"boot": "order=ide2;virtio1;scsi0", "ide2": "none,media=cdrom", "scsi0": DISK, "virtio1": DISK},
            "virtio1",
        ),
        (
            {"boot": "order=net0", "sata1": DISK, "scsi3": DISK},
            "scsi3",
        ),  # PVE's drive order: ide, scsi, virtio, sata
        ({"bootdisk": "virtio0", "scsi0": DISK, "virtio0": DISK}, "virtio0"),
        (
            {
                "ide0": "local:cloudinit,media=cdrom",
                "ide2": "local:100/vm-100-cloudinit.qcow2",
                "sata0": DISK,
            },
            "sata0",
        ),
        ({"efidisk0": "local:100/vm-100-disk-1.raw", "scsi1": DISK}, "scsi1"),
    ],
)
def test_the_boot_disk_is_the_default(config: dict[str, Any], expected: str) -> None:
    assert pick_disk(config, 100, None) == (expected, DISK.split(",")[0])


@pytest.mark.parametrize(
    ("config", "disk", "status", "slug", "says"),
    [
        ({"scsi0": DISK}, "scsi1", 404, ErrorSlug.DISK_NOT_FOUND, "no disk scsi1 (its disks: scsi0)"),
        ({"ide2": "local:iso/x.iso,media=cdrom"}, "ide2", 400, ErrorSlug.DISK_NOT_EXPORTABLE, "CD-ROM"),
        ({"ide2": "none,media=cdrom"}, None, 400, ErrorSlug.DISK_NOT_FOUND, "no disk to export"),
        ({"scsi1": "/dev/sdb,size=1T"}, "scsi1", 400, ErrorSlug.DISK_NOT_EXPORTABLE, "not a volume"),
        ({"scsi1": "local:/etc/shadow"}, "scsi1", 400, ErrorSlug.DISK_NOT_EXPORTABLE, "not a volume"),
        ({"scsi0": "local:100/x\nq.qcow2"}, "scsi0", 400, ErrorSlug.DISK_NOT_EXPORTABLE, "not a volume"),
        ({"scsi0": "-o=evil:100/x.qcow2"}, "scsi0", 400, ErrorSlug.DISK_NOT_EXPORTABLE, "not a volume"),
        ({"efidisk0": "local:100/vm-100-disk-1.raw"}, None, 400, ErrorSlug.DISK_NOT_FOUND, "no disk"),
    ],
)
def test_what_is_not_a_disk_is_refused_naming_it(
    config: dict[str, Any], disk: str | None, status: int, slug: ErrorSlug, says: str
) -> None:
    with pytest.raises(ExportRefused) as caught:
        pick_disk(config, 100, disk)
    assert (caught.value.status, caught.value.slug) == (status, slug)
    assert says in caught.value.message


def _source(snapshot: str | None, running: bool, fmt: str = "qcow2") -> Source:
    view = ExportSource(
        vmid=100, vm_name="web", disk="scsi0", volume="local:100/vm-100-disk-0.qcow2", format=fmt,
        size=1 << 30, snapshot=snapshot, running=running,
    )  # fmt: skip
    return Source(view, "/var/lib/vz/images/100/vm-100-disk-0.qcow2", 1 << 20)


def test_qemu_img_is_told_the_format_and_the_snapshot() -> None:
    part = Path("/staging/upload-3-0a0b0c0d.qcow2.part")
    src = "/var/lib/vz/images/100/vm-100-disk-0.qcow2"
    assert convert_command(_source(None, False, "raw"), part) == [
        "qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", src, str(part),
    ]  # fmt: skip
    assert convert_command(_source("golden", False), part) == [
        "qemu-img", "convert", "-p", "-f", "qcow2", "-l", "snapshot.name=golden",
        "-O", "qcow2", src, str(part),
    ]  # fmt: skip
    # A running VM's QEMU holds the image's lock: the snapshot is read shared (-U).
    assert "-U" in convert_command(_source("golden", True), part)


@pytest.mark.parametrize(
    ("field", "value"),
    [("disk", "efidisk0"), ("disk", "scsi31"), ("disk", "scsi0\n"), ("disk", "unused0"),
     ("snapshot", "current;rm"), ("snapshot", "1abc"), ("snapshot", "a" * 41), ("snapshot", "x\n")],
)  # fmt: skip
def test_export_request_refuses_what_pve_would_not_name(field: str, value: str) -> None:
    body = {"upload_id": 1, "vmid": 100, "max_virtual_size": 1 << 30, field: value}
    with pytest.raises(InvalidInput) as caught:
        parse(ExportRequest, body)
    assert field in str(caught.value)

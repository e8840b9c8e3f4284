"""A client's PVE volume id (shared/volume_id.py): import volumes and disk images as PVE names
them pass, with their storage, kind and owning VM; other content types are refused by name;
paths, '..', options, control characters and anything else off the allowlist are refused."""

from __future__ import annotations

import pytest

from shared.volume_id import MAX_LENGTH, VolumeId, VolumeRefused, parse_volume_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:import/debian-13.qcow2", VolumeId("local", "import/debian-13.qcow2", "import", None)),
        ("nfs.1:import/noble+cloud_v1.raw", VolumeId("nfs.1", "import/noble+cloud_v1.raw", "import", None)),
        ("local:import/Win_2025.vmdk", VolumeId("local", "import/Win_2025.vmdk", "import", None)),
        ("local-lvm:vm-100-disk-0", VolumeId("local-lvm", "vm-100-disk-0", "images", 100)),
        ("tank:base-9000-disk-1", VolumeId("tank", "base-9000-disk-1", "images", 9000)),
        (
            "local:100/vm-100-disk-0.qcow2",
            VolumeId("local", "100/vm-100-disk-0.qcow2", "images", 100),
        ),
        (
            "local:100/base-100-disk-0.raw/101/vm-101-disk-0.qcow2",
            VolumeId("local", "100/base-100-disk-0.raw/101/vm-101-disk-0.qcow2", "images", 101),
        ),
        (
            "rbd:base-100-disk-0/vm-101-disk-0",
            VolumeId("rbd", "base-100-disk-0/vm-101-disk-0", "images", 101),
        ),
    ],
)
def test_import_volumes_and_disk_images_parse(text: str, expected: VolumeId) -> None:
    parsed = parse_volume_id(text)
    assert parsed == expected and parsed.volid == text


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("local:iso/debian-13.iso", "iso"),
        ("local:vztmpl/debian-13-standard.tar.zst", "vztmpl"),
        ("local:backup/vzdump-qemu-100-2025_01_01-00_00_00.vma.zst", "backup"),
        ("local:snippets/user-data.yaml", "snippets"),
    ],
)
def test_other_content_types_are_refused_by_name(text: str, kind: str) -> None:
    with pytest.raises(VolumeRefused, match=f"has content type {kind}"):
        parse_volume_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "local",
        "local:",
        ":import/a.qcow2",
        "1local:import/a.qcow2",
        "local-:import/a.qcow2",
        "lo cal:import/a.qcow2",
        "/var/lib/vz/import/a.qcow2",
        "local:/etc/shadow",
        "local:import//etc/shadow.raw",
        "local:import/../images/100/vm-100-disk-0.qcow2",
        "local:100/../../etc/vm-100-disk-0.raw",
        "local:import/a..qcow2",
        "local:import/.hidden.qcow2",
        "local:import/a.qcow2,import-from=/etc/shadow",
        "local:import/a=b.qcow2",  # '=' would start a drive option
        "local:vm-100-disk-0,size=1G",
        "local:import/a.qcow2\n",
        "local:import/a\x00.qcow2",
        "local:import/a\t.qcow2",
        "local:import/a b.qcow2",
        "local:import/a.iso",
        "local:import/disk.ova",
        "local:import/appliance.ova/disk1.vmdk",
        "local:import/sub/a.qcow2",
        "local:100/vm-100-disk-0",  # a dir storage's disk has a format suffix
        "local:vm-99-disk-0",  # VMIDs start at 100
        "local:vm-100-disk-0.qcow2;rm -rf /",
        "local:subvol-100-disk-0",  # a container's volume
        "local:100/vm-100-disk-0.qcow2/../x",
        "local:import/" + "a" * MAX_LENGTH + ".qcow2",
        "local:import/ä.qcow2",
    ],
)
def test_hostile_and_malformed_ids_are_refused(text: str) -> None:
    with pytest.raises(VolumeRefused):
        parse_volume_id(text)

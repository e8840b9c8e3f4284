"""A file declared raw must not be one that qemu's format probing takes for something else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.image_probe import probe, read_ends
from agent.validate import ImageRejected, check_header
from tests.support import images

KINDS = [*images.LOOKALIKE_HEADERS, "dmg"]


@pytest.mark.parametrize("kind", KINDS)
def test_what_qemu_would_not_open_as_raw_is_refused_as_raw(tmp_path: Path, kind: str) -> None:
    fmt = kind.removesuffix("-ext")
    # qemu finds a dmg by its name only; every other one is probed under a .raw name.
    image = images.looks_like(kind, tmp_path / ("disk.dmg" if fmt == "dmg" else "disk.raw"))
    assert images.probed_format(image) != "raw", "the test image is not one qemu takes for another format"
    assert probe(*read_ends(image)) == fmt
    with pytest.raises(ImageRejected) as rejected:
        check_header(image, "raw", "disk.raw")
    assert rejected.value.status == 422
    assert rejected.value.reason.startswith(f"disk.raw is declared raw but its content is {fmt}; ")


@pytest.mark.parametrize(
    "text",
    [b"version=1\n", b"# made by hand\n   \r\nversion=3\r\n", b"# Disk DescriptorFile\nversion=1\n"],
)
def test_a_vmdk_descriptor_in_disguise_is_refused(tmp_path: Path, text: bytes) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(text + bytes(4096))
    assert images.probed_format(image) != "raw"
    with pytest.raises(ImageRejected, match="VMDK descriptor files reference other files"):
        check_header(image, "raw", "disk.raw")


@pytest.mark.parametrize(
    "content",
    [bytes(images.MiB), os.urandom(images.MiB), b"\xeb\x63\x90" + bytes(509), b"version=4\n" + bytes(100)],
    ids=["zeros", "random", "boot-sector", "text"],
)
def test_a_real_raw_disk_is_raw(tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(content)
    assert images.probed_format(image) == "raw"
    assert probe(*read_ends(image)) == "raw"
    check_header(image, "raw", "disk.raw")

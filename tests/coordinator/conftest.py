"""A VM to make templates from (from-vm, from-volume), on pve-node1's ``local`` storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.stack import Stack
from tests.support import images
from tests.support.source_vms import config_text, create_vm, destroy_vm, free_vmid, sha256

NODE = "pve-node1"


class SourceVm:
    def __init__(self, stack: Stack, vmid: int, disk: Path, image: Path) -> None:
        self.stack, self.vmid, self.disk, self.image = stack, vmid, disk, image

    def state(self) -> tuple[str, str]:
        """What must not change: the config file's text and the disk's bytes."""
        return config_text(self.stack, NODE, self.vmid), sha256(self.disk)


@pytest.fixture
def source_vm(stack: Stack, tmp_path: Path) -> Iterator[SourceVm]:
    image = images.qcow2(tmp_path / "source.qcow2", size_mib=24, data_mib=4, seed=7)
    vmid = free_vmid(stack)
    disk = create_vm(stack, NODE, vmid, image)
    yield SourceVm(stack, vmid, disk, image)
    destroy_vm(stack, NODE, vmid)

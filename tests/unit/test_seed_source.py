"""Which seeds a target reads (agent/transfer/seed_source.py): only disks of VMs we imported,
by the path PVE gives, in a format it can read as the guest sees it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.transfer.seed_source import resolve_seed
from shared.messages.transfers import Seed

VOLUME = "local:9001/base-9001-disk-0.qcow2"


class FakePve:
    node = "pve-node2"

    def __init__(
        self, description: str, fmt: str = "qcow2", path: str = "/var/lib/vz/images/9001/x.qcow2"
    ) -> None:
        self.config = {"description": description, "scsi0": f"{VOLUME},size=2G", "template": 1}
        self.content = {"path": path, "format": fmt}
        self.calls: list[str] = []

    async def call(self, method: str, path: str, **_kw: Any) -> dict[str, Any]:
        self.calls.append(path)
        if path.endswith("/config"):
            return self.config
        return self.content


def resolve(pve: FakePve, seed: Seed) -> tuple[Path, str] | None:
    return asyncio.run(resolve_seed(pve, seed))  # type: ignore[arg-type]


def test_a_disk_of_a_vm_we_imported_resolves_to_its_file() -> None:
    pve = FakePve("Debian 12\n\n[pvesphere t3-u7]")
    assert resolve(pve, Seed(vmid=9001, volume_id=VOLUME)) == (
        Path("/var/lib/vz/images/9001/x.qcow2"),
        "qcow2",
    )
    assert pve.calls[-1] == f"nodes/pve-node2/storage/local/content/{VOLUME}"


def test_anything_else_is_no_seed() -> None:
    # Not ours (no marker): PVE is not even asked where its disk is.
    stranger = FakePve("someone's VM")
    assert resolve(stranger, Seed(vmid=9001, volume_id=VOLUME)) is None
    assert len(stranger.calls) == 1
    # Ours, but the volume is not one of its disks.
    assert resolve(FakePve("[pvesphere t3-u7]"), Seed(vmid=9001, volume_id="local:9002/other.raw")) is None
    # A format qemu-img map does not read in place, or no file path (e.g. a block device storage).
    assert resolve(FakePve("[pvesphere t3-u7]", fmt="vmdk"), Seed(vmid=9001, volume_id=VOLUME)) is None
    assert resolve(FakePve("[pvesphere t3-u7]", path=""), Seed(vmid=9001, volume_id=VOLUME)) is None

"""The demo's VM 100 (demo/sample_vm.py) on a fresh emulator: stopped, on pve-node1, its
boot disk a qcow2 with real bytes and the snapshot the README's examples name; made once."""

from __future__ import annotations

import subprocess
from pathlib import Path

from demo import sample_vm
from tests.pvesim.conftest import Emulator


def test_the_demo_gets_a_small_stopped_vm_100_with_a_real_disk(emulator: Emulator, tmp_path: Path) -> None:
    assert sample_vm.ensure_sample_vm(emulator.state_dir, tmp_path)
    pve = emulator.https()
    node = pve.nodes(sample_vm.NODE)
    assert [(vm["vmid"], vm["status"], vm["name"]) for vm in node.qemu.get()] == [(100, "stopped", "web")]
    config = node.qemu(100).config.get()
    assert config["boot"] == "order=scsi0" and "local:100/vm-100-disk-0.qcow2" in config["scsi0"]
    assert [s["name"] for s in node.qemu(100).snapshot.get() if s["name"] != "current"] == ["golden"]
    disk = Path(node.storage("local").content("local:100/vm-100-disk-0.qcow2").get()["path"])
    assert list(tmp_path.iterdir()) == []  # the source image went after the import
    raw = tmp_path / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(raw)], check=True, timeout=60
    )
    data = sample_vm.disk_data()
    with open(raw, "rb") as f:
        assert f.read(len(data)) == data and raw.stat().st_size == sample_vm.DISK_BYTES
    raw.unlink()
    assert not sample_vm.ensure_sample_vm(emulator.state_dir, tmp_path)  # a rerun finds it

"""The demo's import volume (demo/sample_volume.py) on a fresh emulator: listed by PVE as
``local``'s import content on pve-node1, a qcow2 whose bytes start with the demo's text;
placed once."""

from __future__ import annotations

import subprocess
from pathlib import Path

from demo import sample_volume
from tests.pvesim.conftest import Emulator


def test_the_demo_gets_an_import_volume_pve_lists(emulator: Emulator, tmp_path: Path) -> None:
    assert sample_volume.ensure_sample_volume(emulator.state_dir)
    storage = emulator.https().nodes(sample_volume.NODE).storage(sample_volume.STORAGE)
    listed = storage.content.get(content="import")
    assert [(v["volid"], v["format"]) for v in listed] == [(sample_volume.VOLUME, "qcow2")]
    info = storage.content(sample_volume.VOLUME).get()
    assert (info["format"], info["size"]) == ("qcow2", sample_volume.DISK_BYTES)
    raw = tmp_path / "volume.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", info["path"], str(raw)], check=True, timeout=60
    )
    data = sample_volume.volume_data()
    with open(raw, "rb") as f:
        assert f.read(len(data)) == data
    assert sorted(p.name for p in sample_volume.import_dir(emulator.state_dir).iterdir()) == [
        sample_volume.NAME
    ]
    assert not sample_volume.ensure_sample_volume(emulator.state_dir)  # a rerun finds it

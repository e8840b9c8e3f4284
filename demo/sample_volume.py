"""The demo's import volume on pve-node1: ``local:import/demo-cloud.qcow2``, a small qcow2 with
real bytes, for the README's "template from a volume" example (POST /templates/from-volume).
Placed as an administrator places one on a real node: the file copied into the storage's
``import`` directory (on PVE, /var/lib/vz/import/ for ``local``), which PVE then lists as
import content. Written beside it first and renamed, so it is never listed half-written; a
rerun finds it. The tests' stacks do not get it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

NODE = "pve-node1"
STORAGE = "local"
NAME = "demo-cloud.qcow2"
VOLUME = f"{STORAGE}:import/{NAME}"
DISK_BYTES = 32 << 20
CONVERT_TIMEOUT = 60.0


def volume_data() -> bytes:
    """The image's first bytes: a recognisable text, repeated (pure)."""
    line = b"pvesphere demo: the import volume local:import/demo-cloud.qcow2\n"
    return line * (1 << 16)


def import_dir(pvesim_dir: Path) -> Path:
    """Where the emulator keeps ``local``'s import content on pve-node1."""
    return pvesim_dir / "nodes" / NODE / "storage" / STORAGE / "import"


def ensure_sample_volume(pvesim_dir: Path) -> bool:
    """The import volume, made unless it is there already; whether it was made now."""
    folder = import_dir(pvesim_dir)
    target = folder / NAME
    if target.exists():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    raw, part = folder / ".demo-cloud.raw.tmp", folder / ".demo-cloud.qcow2.tmp"
    try:
        with open(raw, "wb") as f:
            f.write(volume_data())
            f.truncate(DISK_BYTES)
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(part)],
            check=True,
            capture_output=True,
            timeout=CONVERT_TIMEOUT,
        )
        os.rename(part, target)
    finally:
        raw.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    return True

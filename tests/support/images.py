"""Disk images for upload tests, built with the real qemu-img (and qemu-io where handy)."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30


def qemu_img(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, f"qemu-img {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def info(path: Path, fmt: str) -> dict[str, object]:
    return json.loads(qemu_img("info", "--output=json", "-f", fmt, str(path)))  # type: ignore[no-any-return]


def raw_with_data(path: Path, size_mib: int, data_mib: int = 4, seed: int = 1) -> Path:
    """A sparse raw disk of ``size_mib`` with ``data_mib`` random MiB spread over it."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
        stride = max(1, size_mib // max(1, data_mib))
        for i in range(data_mib):
            f.seek(i * stride * MiB)
            f.write(rng.randbytes(MiB))
    return path


def qcow2(path: Path, size_mib: int = 32, data_mib: int = 4, seed: int = 1) -> Path:
    """A standalone qcow2 with real (random) data in it."""
    raw = raw_with_data(path.with_name(path.name + ".src.raw"), size_mib, data_mib, seed)
    try:
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    finally:
        raw.unlink()
    return path


def qcow2_with_backing(path: Path, backing: Path) -> Path:
    """An overlay that reads through to ``backing`` (never to be imported)."""
    qemu_img("create", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", str(path))
    return path


def sparse_qcow2(path: Path, virtual_size: int) -> Path:
    """An empty qcow2 of any virtual size: a few hundred KiB on disk."""
    qemu_img("create", "-f", "qcow2", str(path), str(virtual_size))
    return path


def two_extent_vmdk(path: Path) -> Path:
    """A twoGbMaxExtentSparse VMDK: a descriptor naming two extent files beside it."""
    qemu_img("create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", str(path), "3G")
    return path


def truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` part of ``source``: its tables point past the end of the file."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def compare(a: Path, a_fmt: str, b: Path, b_fmt: str) -> subprocess.CompletedProcess[str]:
    """qemu-img compare of the guest-visible content (exit 0: identical)."""
    return subprocess.run(
        ["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LC_ALL": "C"},
    )


# Raw files that another of qemu's formats would claim, built by hand from the magic its
# block driver probes for (qemu block/*.c). Each is 1 MiB of zeros apart from its header.
def _bochs_header() -> bytes:
    fields = [b"Bochs Virtual HD Image", b"Redolog", b"Growing"]
    text = fields[0].ljust(32, b"\0") + fields[1].ljust(16, b"\0") + fields[2].ljust(16, b"\0")
    return text + struct.pack("<II", 0x00020000, 512)  # version 2, header size


LOOKALIKE_HEADERS: dict[str, bytes] = {
    "parallels": b"WithoutFreeSpace" + struct.pack("<I", 2),
    "parallels-ext": b"WithouFreSpacExt" + struct.pack("<I", 2),
    "bochs": _bochs_header(),
    "cloop": b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
    "qcow": b"QFI\xfb" + struct.pack(">I", 1),
    "qed": b"QED\x00",
    "vpc": b"conectix",
    "vhdx": b"vhdxfile",
    "luks": b"LUKS\xba\xbe" + struct.pack(">H", 1),
    "vdi": bytes(0x40) + struct.pack("<I", 0xBEDA107F),
    "vmdk": b"KDMV",
}


def looks_like(kind: str, path: Path) -> Path:
    """1 MiB that qemu's probing takes for ``kind`` (a key of LOOKALIKE_HEADERS, or "dmg")."""
    data = bytearray(MiB)
    if kind == "dmg":
        data[-512:-508] = b"koly"  # the UDIF trailer at the end
    else:
        header = LOOKALIKE_HEADERS[kind]
        data[: len(header)] = header
    path.write_bytes(data)
    return path


def probed_format(path: Path) -> str | None:
    """The format ``qemu-img info`` without -f opens the file as; None when the format it
    probed cannot open it (so not raw, which opens anything)."""
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, timeout=60
    )
    return str(json.loads(result.stdout)["format"]) if result.returncode == 0 else None

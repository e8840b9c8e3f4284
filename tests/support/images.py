"""Disk images for upload tests, built with the real qemu-img (and qemu-io where handy)."""

from __future__ import annotations

import json
import os
import random
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

"""Image validation before import (the attacks in research/anchors.md D1-D3).

Two layers, both required to pass:

1. Our own header check, without qemu-img: what format the bytes really are
   (a qcow2 declared raw is CVE-2024-40767), and for qcow2 the backing file,
   external data file and encryption fields; VMDK must be a single-file
   sparse image (descriptor files name other files: CVE-2022-47951).
2. ``qemu-img info`` and ``qemu-img check`` with an explicit ``-f`` (never
   probe), under CPU and memory limits (CVE-2015-5162), then the same rules
   on what qemu-img reports.
"""

from __future__ import annotations

import asyncio
import json
import resource
import struct
from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw", ".vmdk": "vmdk"}
QEMU_IMG_CPU_SECONDS = 30
QEMU_IMG_ADDRESS_SPACE = 1 << 30
VMDK_SINGLE_FILE_TYPES = {"monolithicSparse", "streamOptimized"}
QCOW2_KNOWN_INCOMPATIBLE = 0b11111  # dirty, corrupt, data file, compression type, extended L2


class ImageRejected(Exception):
    """The image must not be imported. ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    file_size: int


def declared_format(file_name: str) -> str:
    """The format a file name declares; 415 for anything else."""
    suffix = Path(file_name).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ImageRejected(
            f"unsupported file type {suffix or '(none)'!r} in {file_name!r}: "
            "upload a .qcow2, .raw, .img (raw) or .vmdk disk image",
            status=415,
        )
    return EXTENSIONS[suffix]


def sniff(header: bytes) -> str:
    """What the first bytes say the file is ('raw' when no known format matches)."""
    if header.startswith(b"QFI\xfb"):
        return "qcow2"
    if header.startswith(b"KDMV"):
        return "vmdk"
    if header.lstrip().startswith(b"# Disk DescriptorFile"):
        return "vmdk-descriptor"
    if header.startswith(b"COWD"):
        return "vmdk3"
    if header.startswith(b"QED\x00"):
        return "qed"
    if header.startswith(b"conectix"):
        return "vpc"
    if header.startswith(b"vhdxfile"):
        return "vhdx"
    if header.startswith(b"LUKS\xba\xbe"):
        return "luks"
    if len(header) >= 0x44 and header[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    return "raw"


def _check_qcow2_header(header: bytes) -> None:
    if len(header) < 72:
        raise ImageRejected("qcow2 header is truncated")
    version, backing_offset, _bsize, _cbits, _size, crypt = struct.unpack(">IQIIQI", header[4:36])
    if backing_offset:
        raise ImageRejected("qcow2 image has a backing file: upload a standalone image (qemu-img convert)")
    if crypt:
        raise ImageRejected("qcow2 image is encrypted")
    if version >= 3 and len(header) >= 80:
        (incompatible,) = struct.unpack(">Q", header[72:80])
        if incompatible & 0b100:
            raise ImageRejected("qcow2 image uses an external data file")
        if incompatible & 0b10:
            raise ImageRejected("qcow2 image is marked corrupt")
        if incompatible & ~QCOW2_KNOWN_INCOMPATIBLE:
            raise ImageRejected(f"qcow2 image has unknown incompatible features {incompatible:#x}")


def check_header(path: Path, declared: str) -> None:
    with open(path, "rb") as f:
        header = f.read(4096)
    detected = sniff(header)
    if detected == "vmdk-descriptor":
        raise ImageRejected(
            "VMDK descriptor files reference other files (multi-extent VMDK); "
            "upload a single-file monolithicSparse or streamOptimized VMDK"
        )
    if detected != declared:
        hint = {"qcow2": ".qcow2", "vmdk": ".vmdk", "raw": ".raw"}.get(detected)
        advice = f"; rename the file to {hint} if that is what it is" if hint else ""
        raise ImageRejected(f"file is declared {declared} but its content is {detected}{advice}")
    if detected == "qcow2":
        _check_qcow2_header(header)


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (QEMU_IMG_CPU_SECONDS, QEMU_IMG_CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (QEMU_IMG_ADDRESS_SPACE, QEMU_IMG_ADDRESS_SPACE))


async def _qemu_img(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=cwd,
        preexec_fn=_limits,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), QEMU_IMG_CPU_SECONDS * 4)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImageRejected("qemu-img took too long inspecting the image") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()


async def inspect(path: Path, declared: str, max_virtual_size: int) -> ImageInfo:
    """Validate the staged file; returns its facts or raises ImageRejected."""
    check_header(path, declared)
    # An empty working directory: nothing relative can be reached from there.
    cwd = path.parent / ".qemu-img-cwd"
    cwd.mkdir(exist_ok=True)
    code, out, err = await _qemu_img("info", "--output=json", "-f", declared, str(path), cwd=cwd)
    if code != 0:
        raise ImageRejected(f"qemu-img cannot read the file as {declared}: {err or 'exit ' + str(code)}")
    info = json.loads(out)
    if info.get("format") != declared:
        raise ImageRejected(f"qemu-img reads the file as {info.get('format')}, not {declared}")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRejected("image has a backing file: upload a standalone image")
    if info.get("encrypted"):
        raise ImageRejected("image is encrypted")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ImageRejected("qcow2 image uses an external data file")
    if declared == "vmdk":
        extents = specific.get("extents") or []
        if len(extents) != 1 or specific.get("create-type") not in VMDK_SINGLE_FILE_TYPES:
            raise ImageRejected(
                f"VMDK of type {specific.get('create-type')} with {len(extents)} extents: "
                "only single-file monolithicSparse or streamOptimized VMDKs are accepted"
            )
    virtual_size = int(info.get("virtual-size", 0))
    if virtual_size <= 0:
        raise ImageRejected("image has no virtual size")
    if virtual_size > max_virtual_size:
        raise ImageRejected(
            f"virtual size {virtual_size} bytes exceeds the limit of {max_virtual_size} bytes"
        )
    if declared in ("qcow2", "vmdk"):
        # 0 = clean, 3 = only leaked clusters (harmless); anything else = corrupt or truncated.
        code, out, err = await _qemu_img("check", "--output=json", "-f", declared, str(path), cwd=cwd)
        if code not in (0, 3):
            detail = err.splitlines()[-1] if err else out.strip()[:200]
            raise ImageRejected(f"image is corrupt or truncated (qemu-img check: {detail})")
    return ImageInfo(declared, virtual_size, path.stat().st_size)

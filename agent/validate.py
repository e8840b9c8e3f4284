"""Image validation before import (the attacks in research/anchors.md D1-D3).

Two layers, both required to pass:

1. Our own header check, without qemu-img: what format the bytes really are
   (image_probe.py: a raw file must not look like any format qemu knows, a
   qcow2 declared raw is CVE-2024-40767), and for qcow2 the backing file,
   external data file and encryption fields; VMDK must be a single-file
   sparse image (descriptor files name other files: CVE-2022-47951).
2. ``qemu-img info`` and ``qemu-img check`` with an explicit ``-f`` (never
   probe), under CPU and memory limits (CVE-2015-5162), then the same rules
   on what qemu-img reports.

Messages name the upload by the file name its client gave, never by the agent's path
(qemu-img's own words are rewritten accordingly).
"""

from __future__ import annotations

import json
import os
import resource
import struct
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentFault
from agent.image_probe import probe, read_ends
from agent.qemu_img import run_qemu_img

EXTENSIONS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw", ".vmdk": "vmdk"}
QEMU_IMG_CPU_SECONDS = 30
QEMU_IMG_ADDRESS_SPACE = 1 << 30
VMDK_SINGLE_FILE_TYPES = {"monolithicSparse", "streamOptimized"}
QCOW2_KNOWN_INCOMPATIBLE = 0b11111  # dirty, corrupt, data file, compression type, extended L2


class ImageRejected(AgentFault):
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


def check_header(path: Path, declared: str, label: str) -> None:
    header, tail = read_ends(path)
    detected = probe(header, tail)
    if detected == "vmdk-descriptor":
        raise ImageRejected(
            "VMDK descriptor files reference other files (multi-extent VMDK); "
            "upload a single-file monolithicSparse or streamOptimized VMDK"
        )
    if detected != declared:
        hint = {"qcow2": ".qcow2", "vmdk": ".vmdk", "raw": ".raw"}.get(detected)
        if hint:
            advice = f"; rename the file to {hint} if that is what it is"
        else:
            qemu_name = "vmdk" if detected == "vmdk3" else detected
            advice = f"; convert it first (qemu-img convert -f {qemu_name} -O qcow2) and upload the result"
        raise ImageRejected(f"{label} is declared {declared} but its content is {detected}{advice}")
    if detected == "qcow2":
        _check_qcow2_header(header)


def _in_our_words(text: str, path: Path, label: str) -> str:
    """qemu-img names files by their path: the upload's name instead, and no staging directory."""
    text = text.replace(str(path), label).replace(str(path.parent) + os.sep, "")
    return "\n".join(line.removeprefix("qemu-img: ") for line in text.splitlines())


def _check_findings(out: str, err: str, code: int) -> str:
    """What qemu-img check found, from its JSON report (which names the file) where there is one."""
    try:
        report = json.loads(out)
    except ValueError:
        report = {}
    found = [f"{report[key]} {key}" for key in ("corruptions", "check-errors") if report.get(key)]
    if found:
        return ", ".join(found)
    return err.splitlines()[-1] if err else f"exit {code}"


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (QEMU_IMG_CPU_SECONDS, QEMU_IMG_CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (QEMU_IMG_ADDRESS_SPACE, QEMU_IMG_ADDRESS_SPACE))


async def _qemu_img(*args: str, cwd: Path) -> tuple[int, str, str]:
    try:
        return await run_qemu_img(list(args), QEMU_IMG_CPU_SECONDS * 4, cwd, _limits)
    except TimeoutError:
        raise ImageRejected("qemu-img took too long inspecting the image") from None


async def inspect(
    path: Path, declared: str, max_virtual_size: int, label: str, workdir: Path | None = None
) -> ImageInfo:
    """Validate the staged file (``label``: its name for messages); returns its facts or raises
    ImageRejected. ``workdir``: qemu-img's working directory, made empty if missing (default:
    beside the file; a file on a PVE storage is checked from staging's, nothing written there)."""
    check_header(path, declared, label)
    # An empty working directory: nothing relative can be reached from there.
    cwd = workdir or path.parent / ".qemu-img-cwd"
    cwd.mkdir(exist_ok=True)
    code, out, err = await _qemu_img("info", "--output=json", "-f", declared, str(path), cwd=cwd)
    if code != 0:
        said = _in_our_words(err, path, label) or f"exit {code}"
        raise ImageRejected(f"qemu-img cannot read {label} as {declared}: {said}")
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
            found = _in_our_words(_check_findings(out, err, code), path, label)
            raise ImageRejected(f"{label} is corrupt or truncated (qemu-img check: {found})")
    return ImageInfo(declared, virtual_size, path.stat().st_size)

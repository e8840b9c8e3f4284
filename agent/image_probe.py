"""What format an image's bytes are, as qemu's format probing would see them.

A raw image goes onto the storage as it is, and whatever opens that disk later without
naming its format (qemu-img info, an import through a path, an older tool) probes it: a
"raw" disk whose first bytes say qcow2 turns into a qcow2 with the backing file its author
chose (CVE-2008-2004, CVE-2024-40767). So a file declared raw must not look like any
format qemu knows. The checks follow the probe functions of qemu's block drivers
(block/*.c), and are a little wider where that costs nothing (a magic alone suffices here).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

# qemu probes the first 2 KiB (BLOCK_PROBE_BUF_SIZE); reading more only finds more.
HEAD_BYTES = 4096
# dmg's "koly" trailer sits in the last 1 KiB (dmg_find_koly_offset).
TAIL_BYTES = 1024

# (offset, magic, format as qemu names it)
MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"QED\x00", "qed"),
    (0, b"KDMV", "vmdk"),
    (0, b"COWD", "vmdk3"),  # VMware's older sparse format, opened by qemu's vmdk driver
    (0, b"conectix", "vpc"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"LUKS\xba\xbe", "luks"),
    (0, b"WithoutFreeSpace", "parallels"),
    (0, b"WithouFreSpacExt", "parallels"),
    (0, b"Bochs Virtual HD Image", "bochs"),
    (0, b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),  # VDI_SIGNATURE 0xbeda107f, little-endian
)


def read_ends(path: Path) -> tuple[bytes, bytes]:
    """The first HEAD_BYTES and the last TAIL_BYTES of a file (they overlap in a small one)."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - TAIL_BYTES))
        return head, f.read(TAIL_BYTES)


def probe(head: bytes, tail: bytes = b"") -> str:
    """The format qemu would take these bytes for; 'raw' when none matches.

    'vmdk-descriptor' is a text VMDK descriptor (it names other files as its extents).
    """
    if head.startswith(b"QFI\xfb"):
        version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else 0
        return "qcow" if version == 1 else "qcow2"
    for offset, magic, fmt in MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    if _vmdk_descriptor(head):
        return "vmdk-descriptor"
    if b"koly" in tail:
        # qemu picks dmg by the file name (.dmg) only, but the trailer is what a dmg is.
        return "dmg"
    return "raw"


def _vmdk_descriptor(head: bytes) -> bool:
    """qemu's vmdk_probe on text: comment and blank lines, then a line "version=1|2|3"."""
    if head.lstrip().startswith(b"# Disk DescriptorFile"):
        return True
    for line in head.split(b"\n"):
        if line.startswith(b"#") or (line.startswith(b" ") and not line.strip(b" \r")):
            continue
        return line.rstrip(b"\r") in (b"version=1", b"version=2", b"version=3")
    return False

"""What a guest sees of an image file, as ranges of the file: ``qemu-img map`` extents.

A copy moves the image as the guest sees it (raw, its virtual size), because that is what
stays put when an image is rebuilt: a new qcow2 moves its clusters around in the file
(one cluster freed or added shifts everything after it), the guest's offsets do not. So
the chunks of two versions are compared at guest offsets, and a node holding the old
version finds the unchanged chunks of the new one where they were.

``qemu-img map --output=json`` of a raw file, or of a qcow2 without a backing file and
with uncompressed clusters, says for every guest range either "reads as zeros" or "is
at this host offset of the file": reads of those ranges are the guest view, no
conversion. Anything else (compressed clusters carry no offset, VMDK grains may be
compressed) is converted to raw once (``needs_conversion``). Pure: parsing and lookup only.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass

from agent.errors import AgentFault

# Formats whose map offsets are plain reads of the file (uncompressed clusters).
DIRECT_FORMATS = ("raw", "qcow2")


class MapRefused(AgentFault, ValueError):
    """The map cannot be read as a plain guest view (convert the image to raw first)."""


@dataclass(frozen=True)
class Extent:
    start: int  # guest offset
    length: int
    host: int | None  # where the bytes are in the file; None: the range reads as zeros


def parse_map(text: str, virtual_size: int | None) -> list[Extent]:
    """The extents of a ``qemu-img map --output=json`` answer, checked: they must cover
    [0, virtual_size) in order (None: whatever size they cover, at least one byte), and
    every range must be zeros or data at a host offset of the file itself (depth 0: no
    backing file). MapRefused otherwise."""
    try:
        rows = json.loads(text)
    except ValueError as exc:
        raise MapRefused(f"qemu-img map answered no JSON: {exc}") from None
    if not isinstance(rows, list):
        raise MapRefused("qemu-img map answered no list of extents")
    extents: list[Extent] = []
    at = 0
    for row in rows:
        try:
            start, length = int(row["start"]), int(row["length"])
            zero, data = bool(row["zero"]), bool(row["data"])
        except (KeyError, TypeError, ValueError):
            raise MapRefused(f"qemu-img map extent is malformed: {str(row)[:200]}") from None
        if start != at or length <= 0:
            raise MapRefused(f"qemu-img map extents leave a gap or overlap at guest offset {at}")
        if int(row.get("depth", 0)) != 0:
            raise MapRefused("image reads from a backing file")
        if row.get("compressed"):
            raise MapRefused("image has compressed clusters")
        host = row.get("offset")
        if zero:
            extents.append(Extent(start, length, None))
        elif data and isinstance(host, int) and host >= 0:
            extents.append(Extent(start, length, host))
        else:  # compressed (no offset in qemu 7), or data that is neither here nor zero
            raise MapRefused(f"guest range at {start} has no plain host offset")
        at = start + length
    if at != virtual_size and (virtual_size is not None or at == 0):
        raise MapRefused(f"qemu-img map covers {at} bytes, the image has {virtual_size}")
    return _merged(extents)


def data_bytes(text: str) -> int:
    """The guest bytes a ``qemu-img map --output=json`` answer says are not zeros (what a
    sparse raw conversion of the image takes on disk at most); 0 if it is no map."""
    try:
        rows = json.loads(text)
        return sum(int(r["length"]) for r in rows if not r.get("zero"))
    except (ValueError, TypeError, KeyError):
        return 0


def _merged(extents: list[Extent]) -> list[Extent]:
    """Neighbours of one kind that continue each other become one extent (fewer reads)."""
    out: list[Extent] = []
    for e in extents:
        last = out[-1] if out else None
        if last is not None and (
            (last.host is None and e.host is None)
            or (last.host is not None and e.host is not None and last.host + last.length == e.host)
        ):
            out[-1] = Extent(last.start, last.length + e.length, last.host)
        else:
            out.append(e)
    return out


def identity(size: int) -> list[Extent]:
    """A raw file read as it is (a received copy: its bytes are the guest view)."""
    return [Extent(0, size, 0)] if size else []


class GuestLayout:
    """Lookups in one image's extents."""

    def __init__(self, extents: list[Extent]) -> None:
        self.extents = extents
        self._starts = [e.start for e in extents]
        self.size = extents[-1].start + extents[-1].length if extents else 0

    def segments(self, offset: int, length: int) -> Iterator[tuple[int, int | None]]:
        """(length, host offset or None for zeros) of the pieces of guest range [offset, offset+length)."""
        if offset < 0 or offset + length > self.size:
            raise ValueError(f"guest range {offset}+{length} is outside the image ({self.size} bytes)")
        i = bisect.bisect_right(self._starts, offset) - 1
        end = offset + length
        while offset < end:
            e = self.extents[i]
            n = min(end, e.start + e.length) - offset
            yield n, None if e.host is None else e.host + (offset - e.start)
            offset += n
            i += 1

    def all_zero(self, offset: int, length: int) -> bool:
        """The range reads as zeros without reading anything."""
        return all(host is None for _n, host in self.segments(offset, length))

    def file_end(self) -> int:
        """How far into the file the data goes (a file shorter than this is not this image)."""
        return max((e.host + e.length for e in self.extents if e.host is not None), default=0)

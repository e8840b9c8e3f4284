"""Reading an image file as its guest view (I/O around guest_view.py).

``map_image`` asks ``qemu-img map`` where the guest's bytes are in a file; a file whose map
is not a plain guest view (compressed clusters, VMDK) is converted to raw once
(``qemu-img convert -O raw``, sparse) and that file is read instead. ``read_chunk``
gathers one guest range from the file (zeros where the map says so), and
``build_manifest`` hashes the whole guest view chunk by chunk (shared/manifest.py).
qemu-img runs without a shell, in an empty directory, under a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentFault
from agent.qemu_img import run_qemu_img
from agent.transfer.guest_view import DIRECT_FORMATS, GuestLayout, MapRefused, data_bytes, parse_map
from shared.deadlines import scaled_timeout
from shared.frames import CHUNK
from shared.manifest import Manifest, ManifestBuilder

MAP_SECONDS = 120.0
# A conversion is qemu-img reading and writing the image once: the import's kind of work.
CONVERT_SECONDS, CONVERT_SECONDS_PER_GIB = 120.0, 60.0
ZEROS = memoryview(bytes(CHUNK))
# Asked for room in staging for so many bytes (why); raises if there is none.
RoomMaker = Callable[[int, str], Awaitable[None]]


class GuestViewFailed(AgentFault):
    """qemu-img could not say (or make) the guest view of an image."""


@dataclass(frozen=True)
class GuestImage:
    """A file and where its guest view's bytes are in it."""

    path: Path
    layout: GuestLayout

    @property
    def size(self) -> int:
        return self.layout.size


async def _qemu_img(args: list[str], seconds: float, cwd: Path) -> str:
    code, out, err = await run_qemu_img(args, seconds, cwd)
    if code:
        raise GuestViewFailed(f"qemu-img {args[0]} failed (exit {code}): {err[-300:]}")
    return out


async def map_file(path: Path, fmt: str, cwd: Path) -> GuestLayout:
    """The guest view's layout of ``path`` read as ``fmt``; MapRefused if it is no plain one."""
    if fmt not in DIRECT_FORMATS:
        raise MapRefused(f"{fmt} images are read through a raw conversion")
    try:
        out = await _qemu_img(["map", "--output=json", "-f", fmt, str(path)], MAP_SECONDS, cwd)
    except TimeoutError:
        raise GuestViewFailed(f"qemu-img map of {path.name} took over {MAP_SECONDS:.0f} s") from None
    extents = parse_map(out, None)
    layout = GuestLayout(extents)
    if layout.file_end() > path.stat().st_size:
        raise GuestViewFailed(f"{path.name} is shorter than its qemu-img map says")
    return layout


async def map_image(
    path: Path, fmt: str, converted: Path, cwd: Path, make_room: RoomMaker | None = None
) -> GuestImage:
    """The guest view of a staged image: read in place, or from its raw conversion at
    ``converted`` (made here once, within the staging budget: ``make_room`` is asked for
    the bytes it will take; kept for the next copies of the same image)."""
    try:
        return GuestImage(path, await map_file(path, fmt, cwd))
    except MapRefused:
        pass
    if not converted.exists():
        if make_room is not None:
            listed = await _qemu_img(["map", "--output=json", "-f", fmt, str(path)], MAP_SECONDS, cwd)
            await make_room(data_bytes(listed), f"the raw conversion of {path.name}")
        part = converted.with_name(converted.name + ".part")
        seconds = scaled_timeout(CONVERT_SECONDS, CONVERT_SECONDS_PER_GIB, path.stat().st_size)
        try:
            await _qemu_img(["convert", "-f", fmt, "-O", "raw", str(path), str(part)], seconds, cwd)
        except TimeoutError:
            part.unlink(missing_ok=True)
            raise GuestViewFailed(f"converting {path.name} to raw took over {seconds:.0f} s") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, converted)
    try:
        return GuestImage(converted, await map_file(converted, "raw", cwd))
    except MapRefused as exc:
        raise GuestViewFailed(f"the raw conversion of {path.name} cannot be read: {exc}") from None


def read_chunk(fd: int, layout: GuestLayout, offset: int, length: int) -> list[bytes | memoryview]:
    """Guest range [offset, offset+length) of the file open at ``fd``, in pieces."""
    pieces: list[bytes | memoryview] = []
    for n, host in layout.segments(offset, length):
        if host is None:
            pieces.append(ZEROS[:n])
            continue
        data = os.pread(fd, n, host)
        if len(data) != n:
            raise OSError(f"short read at {host}: {len(data)} of {n} bytes")
        pieces.append(data)
    return pieces


def mapped_chunk(mapped: memoryview, layout: GuestLayout, offset: int, length: int) -> list[memoryview]:
    """The same from the file mapped in memory (no copy: slices of the map)."""
    return [
        ZEROS[:n] if host is None else mapped[host : host + n] for n, host in layout.segments(offset, length)
    ]


def build_manifest(image: GuestImage, stop: Callable[[], bool] = lambda: False) -> Manifest:
    """Hash the guest view chunk by chunk (a worker thread's job: ~2 GB/s of sha256 per core here)."""
    builder = ManifestBuilder(image.size)
    fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for offset in range(0, image.size, CHUNK):
            if stop():
                raise GuestViewFailed("manifest build stopped")
            length = min(CHUNK, image.size - offset)
            if image.layout.all_zero(offset, length):
                builder.add(ZEROS[:length], zero_known=True)
                continue
            builder.add(b"".join(read_chunk(fd, image.layout, offset, length)))
    finally:
        os.close(fd)
    return builder.result()

"""Manifests of the staged images this agent sends from, built once and kept beside them.

The coordinator asks for a staged image's manifest digest each time it starts a copy
from it (``GET /v1/staged/{name}/manifest``): the first ask starts a build in the
background and is answered "building" (the copy waits, as it does for a busy source),
later ones "ready" with the digest, from ``staging/manifests/<name>.mf``. The file is
keyed by the image's inode and size (a staged image is never changed in place; its
mtime moves with every use, so it is no key). A staged image whose guest view needs a
raw conversion keeps that conversion beside it too (``<name>.raw``), for the sends.
Building hashes the whole guest view once (its sha256, and BLAKE3 per chunk), one build at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from agent.staging import Staging
from agent.transfer.guest_image import (
    GuestImage,
    GuestViewFailed,
    RoomMaker,
    build_manifest,
    map_file,
    map_image,
)
from agent.transfer.guest_view import Extent, GuestLayout, MapRefused
from shared.manifest import Manifest, ManifestInvalid, decode
from shared.messages.transfers import ManifestView

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: manifest format 2 (BLAKE3 chunk digests)


@dataclass(frozen=True)
class Ready:
    manifest: Manifest
    raw: bytes  # its canonical bytes (what the ticket's digest is of)
    image: GuestImage


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_size


def staged_format(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class StagedManifests:
    def __init__(self, staging: Staging, make_room: RoomMaker | None = None) -> None:
        self.staging = staging
        self.make_room = make_room
        self.root = staging.beside
        self.root.mkdir(exist_ok=True, mode=0o700)
        self._builds: dict[str, asyncio.Task[Ready]] = {}
        self._one_at_a_time = asyncio.Semaphore(1)
        self._preparing: set[asyncio.Task[None]] = set()

    def _cache(self, name: str) -> Path:
        return self.root / f"{name}.mf"

    def converted(self, name: str) -> Path:
        return self.root / f"{name}.raw"

    def forget(self, name: str) -> None:
        """The staged image is gone: so is what was kept beside it."""
        for path in (self._cache(name), self.converted(name)):
            path.unlink(missing_ok=True)

    def cached(self, name: str) -> Ready | None:
        """The kept manifest of the staged image ``name``, if it is of the file there now."""
        path = self.staging.path(name)
        try:
            version, key, host_name, extents, raw = msgspec.msgpack.decode(self._cache(name).read_bytes())
            if version != CACHE_VERSION or tuple(key) != _key(path):
                return None
            host = self.root / host_name if host_name else path
            layout = GuestLayout([Extent(s, n, None if h < 0 else h) for s, n, h in extents])
            manifest = decode(raw)
        except (FileNotFoundError, ValueError, TypeError, msgspec.DecodeError, ManifestInvalid):
            return None
        if not host.exists() or layout.size != manifest.size:
            return None
        return Ready(manifest, raw, GuestImage(host, layout))

    def prepare(self, name: str) -> None:
        """A staged upload just landed: build its manifest now, beside its import (every copy
        to another node starts by asking for it, and the import's disk is indexed as a seed
        with it), if the image is read in place. One that needs a raw conversion waits for
        the first copy that asks: the conversion costs staging space."""

        async def build_if_direct() -> None:
            try:
                await map_file(self.staging.path(name), staged_format(name), self.root / ".qemu-img-cwd")
            except (MapRefused, GuestViewFailed, OSError):
                return
            self.view(name)

        task = asyncio.create_task(build_if_direct(), name=f"manifest-prepare-{name}")
        self._preparing.add(task)
        task.add_done_callback(self._preparing.discard)

    async def built(self, name: str, seconds: float) -> Manifest | None:
        """The manifest of ``name`` if it is kept or its build ends within ``seconds``
        (none is started here)."""
        ready = self.cached(name)
        task = self._builds.get(name)
        if ready is None and task is not None:
            with contextlib.suppress(Exception):
                ready = await asyncio.wait_for(asyncio.shield(task), seconds)
        return None if ready is None else ready.manifest

    def view(self, name: str) -> ManifestView:
        """How far the manifest of ``name`` is (a build starts if there is none): for the coordinator."""
        ready = self.cached(name)
        if ready is not None:
            m = ready.manifest
            return ManifestView(name, "ready", digest=m.digest(), size=m.size, image_sha256=m.image_sha256)
        task = self._builds.get(name)
        if task is not None and task.done():
            del self._builds[name]
            exc = task.exception()
            if exc is not None:  # said once; the next ask builds again
                return ManifestView(name, "failed", error=str(exc)[:500])
            task = None
        if task is None:
            self._builds[name] = asyncio.create_task(self._build(name), name=f"manifest-{name}")
        return ManifestView(name, "building")

    async def _build(self, name: str) -> Ready:
        path = self.staging.path(name)
        async with self._one_at_a_time:
            began = time.perf_counter()
            key = _key(path)
            image = await map_image(
                path, staged_format(name), self.converted(name), self.root / ".qemu-img-cwd", self.make_room
            )
            mapped = time.perf_counter()
            manifest = await asyncio.to_thread(build_manifest, image)
            raw = manifest.encode()
            host_name = "" if image.path == path else image.path.name
            extents = [[e.start, e.length, -1 if e.host is None else e.host] for e in image.layout.extents]
            tmp = self._cache(name).with_suffix(".tmp")
            tmp.write_bytes(msgspec.msgpack.encode([CACHE_VERSION, list(key), host_name, extents, raw]))
            os.replace(tmp, self._cache(name))
        log.info(
            "manifest of %s in %.2f s (map %.2f s): %d chunks, %d of them zeros, guest view %d bytes%s",
            name,
            time.perf_counter() - began,
            mapped - began,
            len(manifest.chunks),
            sum(1 for d in manifest.chunks if not d),
            manifest.size,
            " (read from its raw conversion)" if host_name else "",
        )
        return Ready(manifest, raw, image)

    async def close(self) -> None:
        tasks = [*self._preparing, *self._builds.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

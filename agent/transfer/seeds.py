"""Seeds: what a target already holds of an image it receives (an earlier version's disk).

A node that holds version 1 of a template and receives version 2 need not be sent the
chunks the two share. The coordinator names the node's earlier versions in the hop
(``Hop.seeds``: VM and volume); the target resolves each to a file only through PVE and
only for a VM that carries our import marker (``resolve_seeds``, agent/server.py wires it),
reads its guest view (qemu-img map, as a sender does: guest_image.py), and indexes the
digests of its chunks (as the manifest has them): digest -> guest offset, kept on disk under
``staging/receives/seeds/`` keyed by the file's path, size and mtime (a template's disk
does not change, so the next version's copy finds the index made).

Most indexes are never made by reading: when an image this node received or was uploaded
is imported, the signed manifest it came with already says which chunk is at which guest
offset, and ``record`` writes the index from it (agent/transfer/imported_seeds.py). At
rollout time the seed is then only mapped (qemu-img map, ~0.05 s) and the index read
from disk. Reading the seed at session open cost ~2 s per node at 512 MiB under load, and
a relay chain opens its hops' sessions one after another, so it added up along the chain.

Nothing read from a seed is trusted: chunk_writer.py hashes every chunk it takes from one
against the signed manifest, and a chunk that does not match (a disk that rotted, a file
changed behind PVE's back) comes over the network instead.

A seed without a recorded index (imported before this, or its file changed since) is
indexed by reading it: the whole seed once (read and hash). A session waits for it
at most INDEX_WAIT seconds (a peer's session request must be answered within its 30 s);
a seed indexed later serves the next attempt (the index is kept).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from agent.transfer.guest_image import GuestImage, GuestViewFailed, map_file, read_chunk
from agent.transfer.guest_view import Extent, GuestLayout, MapRefused, identity
from shared.frames import CHUNK
from shared.manifest import Manifest, chunk_hash
from shared.messages.transfers import Seed

log = logging.getLogger(__name__)

INDEX_WAIT = 15.0
INDEX_VERSION = 2  # 2: BLAKE3 chunk digests (manifest format 2), and the file's layout

# A seed as PVE placed it: (file path, format raw|qcow2); None where it cannot be a seed.
SeedResolver = Callable[[Seed], Awaitable[tuple[Path, str] | None]]


@dataclass
class SeedIndex:
    image: GuestImage
    offsets: dict[bytes, int]  # chunk digest -> guest offset (chunks that are not zeros)


def manifest_offsets(manifest: Manifest) -> dict[bytes, int]:
    """Digest -> guest offset of every whole chunk with data, as the manifest says (what
    ``index_chunks`` finds by reading an image with this manifest)."""
    offsets: dict[bytes, int] = {}
    for index, digest in enumerate(manifest.chunks):
        offset, length = manifest.span(index)
        if digest and length == CHUNK:
            offsets.setdefault(digest, offset)
    return offsets


def index_chunks(image: GuestImage) -> dict[bytes, int]:
    """Digest -> guest offset of every whole chunk of the seed that is not zeros (worker thread)."""
    offsets: dict[bytes, int] = {}
    fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for offset in range(0, image.size - CHUNK + 1, CHUNK):
            if image.layout.all_zero(offset, CHUNK):
                continue
            offsets.setdefault(chunk_hash(*read_chunk(fd, image.layout, offset, CHUNK)), offset)
    finally:
        os.close(fd)
    return offsets


@dataclass
class SeedSet:
    """The seeds of one receive: which chunk digests they hold, and reading them."""

    indexes: list[SeedIndex] = field(default_factory=list)

    def held(self, digest: bytes) -> bool:
        return any(digest in i.offsets for i in self.indexes)

    def read(self, digest: bytes, length: int) -> bytes | None:
        """The chunk with ``digest`` as a seed holds it (unchecked: the caller checks), or None."""
        for index in self.indexes:
            offset = index.offsets.get(digest)
            if offset is None:
                continue
            try:
                fd = os.open(index.image.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    return b"".join(read_chunk(fd, index.image.layout, offset, length))
                finally:
                    os.close(fd)
            except (OSError, ValueError) as exc:
                log.warning("seed %s: chunk at %d unreadable: %s", index.image.path, offset, exc)
        return None


class Seeds:
    """Indexes of seed files, made once (in the background) and kept on disk."""

    def __init__(self, root: Path, resolve: SeedResolver | None) -> None:
        self.root = root
        self.resolve = resolve
        self._building: dict[Path, asyncio.Task[SeedIndex | None]] = {}

    def _cache(self, path: Path) -> Path:
        return self.root / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".idx")

    async def for_session(self, seeds: list[Seed]) -> SeedSet:
        """The indexes of ``seeds`` that are ready within INDEX_WAIT (the rest go on being made)."""
        found = SeedSet()
        if not seeds or self.resolve is None:
            return found
        tasks = []
        for seed in seeds:
            try:
                where = await self.resolve(seed)
            except Exception as exc:  # (PVE down, a VM gone: no seed, the network brings it)
                log.warning("seed VM %s (%s) not used: %s", seed.vmid, seed.volume_id, exc)
                continue
            if where is None:
                continue
            path, fmt = where
            task = self._building.get(path)
            if task is None or task.done():
                task = self._building[path] = asyncio.create_task(self._index(path, fmt), name=f"seed-{path}")
            tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=INDEX_WAIT)
        for task in tasks:
            if (
                task.done()
                and not task.cancelled()
                and task.exception() is None
                and task.result() is not None
            ):
                found.indexes.append(task.result())  # type: ignore[arg-type]
            elif not task.done():
                log.info("seed %s is still being indexed: this copy goes without it", task.get_name())
        return found

    def record(self, path: Path, fmt: str, manifest: Manifest) -> None:
        """The file at ``path`` holds the guest view ``manifest`` describes (an import of a
        copy just landed there): keep its index without reading it. Keyed like a read index,
        so a file changed later is read again; a wrong entry costs a network fetch (every
        chunk taken is checked against its copy's manifest), never a corrupt copy. A raw
        file of the image's size is its own guest view: its layout is kept too (no qemu-img
        map when a copy needs it)."""
        if manifest.chunk != CHUNK:
            return
        st = path.stat()
        offsets = manifest_offsets(manifest)
        extents = identity(st.st_size) if fmt == "raw" and st.st_size == manifest.size else None
        self._keep(path, [str(path), st.st_size, st.st_mtime_ns], offsets, extents)
        log.info(
            "seed %s: index of %d distinct chunks with data recorded from its manifest", path, len(offsets)
        )

    def _keep(
        self, path: Path, key: list[object], offsets: dict[bytes, int], extents: list[Extent] | None
    ) -> None:
        cache = self._cache(path)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        layout = [[e.start, e.length, -1 if e.host is None else e.host] for e in extents or []]
        tmp.write_bytes(msgspec.msgpack.encode([INDEX_VERSION, key, list(offsets.items()), layout]))
        os.replace(tmp, cache)

    def _kept(self, path: Path, key: list[object]) -> tuple[dict[bytes, int], list[Extent]] | None:
        """The index kept for ``path`` if it is of the file as ``key`` says it is now (and its
        layout: [] if none was kept)."""
        try:
            version, cached_key, pairs, layout = msgspec.msgpack.decode(self._cache(path).read_bytes())
            if version != INDEX_VERSION or cached_key != key:
                return None
            extents = [Extent(int(a), int(n), None if h < 0 else int(h)) for a, n, h in layout]
            return {bytes(d): int(o) for d, o in pairs}, extents
        except (FileNotFoundError, ValueError, TypeError, msgspec.DecodeError):
            return None

    async def _index(self, path: Path, fmt: str) -> SeedIndex | None:
        began = time.perf_counter()
        try:
            st = path.stat()
            key: list[object] = [str(path), st.st_size, st.st_mtime_ns]
            kept = self._kept(path, key)
            if kept is not None and kept[1]:
                log.info("seed %s: index and layout kept on disk", path)
                return SeedIndex(GuestImage(path, GuestLayout(kept[1])), kept[0])
            image = GuestImage(path, await map_file(path, fmt, self.root / ".qemu-img-cwd"))
        except (OSError, MapRefused, GuestViewFailed) as exc:
            log.warning("seed %s cannot be read as its guest sees it: %s", path, exc)
            return None
        if kept is not None:
            log.info("seed %s: index kept on disk (map %.2f s)", path, time.perf_counter() - began)
            return SeedIndex(image, kept[0])
        mapped = time.perf_counter()
        offsets = await asyncio.to_thread(index_chunks, image)
        self._keep(path, key, offsets, image.layout.extents)
        log.info(
            "seed %s indexed: %d distinct chunks with data (map %.2f s, read and hash %.2f s)",
            path,
            len(offsets),
            mapped - began,
            time.perf_counter() - mapped,
        )
        return SeedIndex(image, offsets)

    async def close(self) -> None:
        for task in self._building.values():
            task.cancel()
        await asyncio.gather(*self._building.values(), return_exceptions=True)

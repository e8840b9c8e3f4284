"""What this machine allows at best, measured in the same run as the figure it bounds.

Two of issue 14's targets meet a limit that no change to the product can move here, and
a benchmark should show that limit beside the figure, not leave it to prose:

* ``checks_floor``: every node that receives a version must check the whole image's sha256
  and every chunk's BLAKE3 digest against the signed manifest, however few bytes crossed.
  On a real cluster each node has its own cores; here the emulated nodes share two, so the
  checks of N nodes, run as N processes at once over the page cache (no network, no disk
  writes, nothing else), are the least time any rollout to N nodes can take.
* ``zstd_ceiling``: half of the OS-like image is random, so at best ``0.5 + 0.5 / r`` of it
  crosses, ``r`` the ratio zstd gets on the other half; the image's rate can be no higher
  than the link's goodput divided by that share, at any level (the faster levels are
  the ones a 1 Gbit/s sender can feed on two cores).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path

import zstandard

from shared.manifest import CHUNK, chunk_hash, is_zero

ZSTD_LEVELS = (1, 3, 6, 9)


def _check_image(path: str) -> None:
    """What a receiving node computes over the guest view: sha256 of all of it, BLAKE3 of
    each non-zero chunk (zero chunks are holes: compared, never hashed on their own)."""
    whole = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            chunk = view[:n]
            if not is_zero(chunk):
                chunk_hash(chunk)
            whole.update(chunk)
    whole.digest()


def checks_floor(raw_image: Path, nodes: int) -> float:
    """Seconds for ``nodes`` processes at once to check ``raw_image`` (read once first, so
    it comes from the page cache as a staged image's chunks do)."""
    _check_image(str(raw_image))
    context = multiprocessing.get_context("spawn")  # (no forked copy of the caller's threads)
    started = time.perf_counter()
    workers = [context.Process(target=_check_image, args=(str(raw_image),)) for _ in range(nodes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a check process ended with {worker.exitcode}")
    return time.perf_counter() - started


def zstd_ratios(sample: bytes, levels: tuple[int, ...] = ZSTD_LEVELS) -> dict[int, tuple[float, float]]:
    """{level: (ratio, MB per CPU second)} of ``sample`` compressed in chunks, as frames are."""
    found = {}
    for level in levels:
        compressor = zstandard.ZstdCompressor(level=level)
        started = time.process_time()
        packed = sum(len(compressor.compress(sample[at : at + CHUNK])) for at in range(0, len(sample), CHUNK))
        seconds = max(time.process_time() - started, 1e-9)
        found[level] = (len(sample) / packed, len(sample) / seconds / 1e6)
    return found


def zstd_ceiling(ratio: float, random_share: float, goodput: float) -> float:
    """The most image bytes per link byte-rate: ``goodput`` (a plain stream's share of the
    link) over the share of the image that crosses when the rest compresses ``ratio`` times."""
    return goodput / (random_share + (1 - random_share) / ratio)

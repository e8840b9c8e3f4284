"""The receiving side of a sync alone: how fast can a target take in an image, no network?

Frames of a 2 GiB image (`--quick`: 512 MiB) are fed from memory, 256 KiB at a time (what
a socket read brings), into the agent's own receive path (agent/transfer/frame_reader.py
and receive.py: frame parsing into the reader's buffers, each chunk's xxh3, O_DIRECT writes
into a staging directory in the work directory, the running sha256, the final compare).
Baseline in the same run: hashlib's sha256 over the same bytes, which no receiver can beat
(every byte must go through it).

No target of its own: it shows where the loopback sync's ceiling is (issue 4). The CPU
includes copying each piece once into the reader's buffers, as the kernel's socket read
does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import ssl
import time
from pathlib import Path

import uvloop

from agent.staging import Staging
from agent.transfer.frame_reader import FrameReader
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receives
from agent.transfer.send import RateLimit, Sender
from benchmarks.base import Benchmark, Options
from benchmarks.measure import median, own_cpu_seconds
from benchmarks.report import Target, mb_per_s, size_label, table
from benchmarks.system import require_disk
from shared.frames import CHUNK, chunk_digest, encode_header, stream_length
from shared.manifest import Manifest, chunk_hash
from shared.tickets import TicketSigner, TicketVerifier

SIZE = 2 << 30
QUICK_SIZE = 512 << 20
READ = 256 << 10
PAYLOADS = 8  # distinct 4 MiB payloads, repeated: the image is never all in memory
NODE = "pve-bench"


def _payload(index: int, payloads: list[bytes]) -> bytes:
    return payloads[index % len(payloads)]


def _sha256(size: int, payloads: list[bytes]) -> tuple[str, float, float]:
    """The image's sha256, with the seconds and CPU seconds it took."""
    started, cpu = time.perf_counter(), own_cpu_seconds()
    h = hashlib.sha256()
    for i in range(size // CHUNK):
        h.update(_payload(i, payloads))
    return h.hexdigest(), time.perf_counter() - started, own_cpu_seconds() - cpu


class _MemoryTransport:
    """Stands in for the socket: the reader pauses and resumes it as its buffers fill and free."""

    def __init__(self) -> None:
        self.readable = asyncio.Event()
        self.readable.set()

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()


async def _feed(reader: FrameReader, transport: _MemoryTransport, size: int, payloads: list[bytes]) -> None:
    digests = [chunk_digest(p) for p in payloads]
    for i in range(size // CHUNK):
        payload = memoryview(_payload(i, payloads))
        pieces = [memoryview(encode_header(i * CHUNK, CHUNK, digests[i % len(payloads)]))]
        pieces += [payload[start : start + READ] for start in range(0, CHUNK, READ)]
        for piece in pieces:
            await transport.readable.wait()
            reader.feed(piece)  # copies into the reader's buffer, as recv() does
            await asyncio.sleep(0)  # and a read is a trip through the event loop


async def _receive(
    workdir: Path, task_id: int, size: int, sha256: str, payloads: list[bytes]
) -> tuple[float, float]:
    signer = TicketSigner(workdir / "ticket.key")
    digests = [chunk_hash(p) for p in payloads]
    manifest = Manifest(size, sha256, tuple(digests[i % len(payloads)] for i in range(size // CHUNK)))
    ticket = signer.issue(
        task_id=task_id,
        task_uid=secrets.token_hex(16),
        epoch=1,
        node=NODE,
        size=size,
        sha256=sha256,
        manifest=manifest.digest(),
        fmt="raw",
    )

    async def no_relays(_task: int, _uid: str, _epoch: int) -> str:
        raise RuntimeError("this benchmark relays nothing")

    sender = Sender(no_relays, RateLimit(0), ssl.create_default_context(), PeerPolicy())
    receives = Receives(
        Staging(workdir / "staging"), NODE, PeerPolicy(TicketVerifier(signer.public_key)), sender
    )
    try:
        session, _, _ = receives.open_session(task_id, ticket, [], manifest.encode())
        reader, transport = FrameReader(stream_length(0, size)), _MemoryTransport()
        reader.attach(transport, asyncio.Protocol())  # type: ignore[arg-type]
        started, cpu = time.perf_counter(), own_cpu_seconds()
        feeding = asyncio.create_task(_feed(reader, transport, size, payloads))
        view = await receives.stream(task_id, session.id, reader.frames())
        await feeding
        seconds, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu
        if view.state != "complete":
            raise RuntimeError(f"the receive did not complete: {view}")
        return seconds, cpu
    finally:
        receives.remove(task_id)
        await sender.close()


def run(options: Options) -> list[Target]:
    size = QUICK_SIZE if options.quick else SIZE
    require_disk(options.workdir, size + (256 << 20), f"{size_label(size)} (the received image)")
    payloads = [os.urandom(CHUNK) for _ in range(PAYLOADS)]
    gib = size / (1 << 30)
    hashed: list[tuple[float, float]] = []
    received: list[tuple[float, float]] = []
    for rep in range(options.reps):
        sha256, seconds, cpu = _sha256(size, payloads)
        hashed.append((seconds, cpu))
        received.append(uvloop.run(_receive(options.workdir, rep + 1, size, sha256, payloads)))
        print(
            f"  rep {rep + 1}/{options.reps}: sha256 {mb_per_s(size, seconds)} MB/s, "
            f"receiver {mb_per_s(size, received[-1][0])} MB/s, {received[-1][1] / gib:.2f} CPU s/GiB",
            flush=True,
        )
    sha_s, sha_cpu = median([s for s, _ in hashed]), median([c for _, c in hashed])
    recv_s, recv_cpu = median([s for s, _ in received]), median([c for _, c in received])
    print(f"\n  {size_label(size)}, median of {options.reps}")
    rows = [
        ["hashlib sha256 alone (the floor)", mb_per_s(size, sha_s), f"{sha_cpu / gib:.2f}"],
        ["receiver: frames -> checked, written, sha256", mb_per_s(size, recv_s), f"{recv_cpu / gib:.2f}"],
    ]
    print(table(["what", "MB/s", "CPU s/GiB"], rows))
    print(f"\n  receiver / sha256 alone: {sha_s / recv_s:.2f} x  (no target: a diagnostic for sync-loopback)")
    return []


BENCHMARK = Benchmark(
    "sync-receiver",
    "the receiving side of a sync alone, frames from memory: throughput vs sha256 alone (no target)",
    run,
)

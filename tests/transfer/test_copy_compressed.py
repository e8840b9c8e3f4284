"""zstd on the wire: a compressible image crosses compressed where the hop accepts it, as
the same bytes, and plain where the hop refuses (real HTTP between the production routes)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
from pathlib import Path

import pytest

from agent.staging import Staging
from agent.transfer.send import RateLimit
from shared import wire_codec
from shared.frames import CHUNK
from shared.messages.transfers import Seed
from shared.tickets import TicketSigner
from shared.wire_codec import CODECS
from tests.support.transfers import TargetAgent, send, send_chain, staged_manifest

MiB = 1 << 20
# A capped link (bytes/s): slower than the compressor, so compressing pays.
RATE = 16 * MiB


def os_like_raw(path: Path, size: int) -> None:
    """Chunks of text and binaries from /usr (or made-up text where there are none) and, in
    between, chunks of random bytes (every fourth one)."""
    corpus = bytearray()
    for name in sorted(glob.glob("/usr/lib/python3*/*.py"))[:400]:
        corpus += Path(name).read_bytes()
        if len(corpus) >= 2 * CHUNK:
            break
    while len(corpus) < 2 * CHUNK:
        corpus += b"def function_%d(argument):\n    return argument * %d\n" % (len(corpus), len(corpus))
    with open(path, "wb") as f:
        for index in range(size // CHUNK):
            if index % 4 == 3:
                f.write(os.urandom(CHUNK))
            else:
                at = (index * 977 * 4096) % CHUNK
                f.write(bytes(corpus[at : at + CHUNK]))


def copy_with(tmp_path: Path, offered: tuple[str, ...], accepted: tuple[str, ...]) -> tuple[int, int]:
    """(bytes that crossed, image size) of a copy of a 32 MiB OS-like image; asserts it is identical."""
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-1-0a1b2c3d.raw"
    os_like_raw(staging.path(name), 32 * MiB)
    signer = TicketSigner(tmp_path / "key")

    async def scenario() -> tuple[int, int]:
        ready = await staged_manifest(staging, name)
        target = TargetAgent(tmp_path / "target", signer)
        target.sender.codecs = accepted
        await target.start()
        try:
            await send(ready, target, task_id=1, task_uid=secrets.token_hex(16), rate=RATE, codecs=offered)
            view = target.receive(1).view()
            copy = target.receive(1).path
        finally:
            await target.stop()
        assert view.state == "complete", view
        assert copy.read_bytes() == staging.path(name).read_bytes()
        return view.received_bytes, view.size

    return asyncio.run(scenario())


def test_a_compressible_image_crosses_compressed_and_arrives_identical(tmp_path: Path) -> None:
    crossed, size = copy_with(tmp_path, CODECS, CODECS)
    # A quarter random, three quarters text: well under 60% of the image crosses.
    assert crossed < 0.6 * size, (crossed, size)


def test_a_hop_that_refuses_compression_gets_the_image_plain(tmp_path: Path) -> None:
    crossed, size = copy_with(tmp_path, CODECS, ())
    assert crossed == size


def test_a_sender_that_offers_nothing_sends_plain(tmp_path: Path) -> None:
    crossed, size = copy_with(tmp_path, (), CODECS)
    assert crossed == size


def test_a_compressed_copy_cut_off_mid_batch_resumes_and_arrives_identical(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-1-0a1b2c3d.raw"
    os_like_raw(staging.path(name), 64 * MiB)
    signer = TicketSigner(tmp_path / "key")
    uid = secrets.token_hex(16)

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        first = TargetAgent(tmp_path / "target", signer)
        first.sender.codecs = CODECS
        await first.start()
        # 4 MiB/s on the wire: the copy is cut off a few batches in.
        sending = asyncio.create_task(
            send(ready, first, task_id=3, task_uid=uid, rate=4 * MiB, codecs=CODECS)
        )
        for _ in range(600):
            await asyncio.sleep(0.05)
            receive = first.receives.get(3)
            if receive is not None and receive.rec.verified >= 4 * CHUNK:
                break
        killed_at = first.receive(3).rec.verified
        assert 0 < killed_at < 64 * MiB
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await first.stop()

        again = TargetAgent(tmp_path / "target", signer)
        again.sender.codecs = CODECS
        await again.start()
        try:
            await send(ready, again, task_id=3, task_uid=uid, epoch=2, rate=RATE, codecs=CODECS)
            view = again.receive(3).view()
            assert view.state == "complete", view
            assert view.resumed_from >= killed_at
            assert again.receive(3).path.read_bytes() == staging.path(name).read_bytes()
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_a_relay_compresses_again_for_its_next_hop(tmp_path: Path) -> None:
    """Source -> A -> B, both links capped: A verifies each chunk uncompressed and compresses
    it again for B (its own choice for its own link)."""
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-1-0a1b2c3d.raw"
    os_like_raw(staging.path(name), 32 * MiB)
    signer = TicketSigner(tmp_path / "key")

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        relay, last = TargetAgent(tmp_path / "a", signer), TargetAgent(tmp_path / "b", signer)
        relay.sender.codecs = last.sender.codecs = CODECS
        relay.sender.rate_limit = RateLimit(RATE)
        await relay.start()
        await last.start()
        try:
            hops: list[tuple[TargetAgent, int, str, list[Seed]]] = [
                (relay, 20, secrets.token_hex(16), []),
                (last, 21, secrets.token_hex(16), []),
            ]
            await send_chain(ready, hops, rate=RATE, codecs=CODECS)
            for _ in range(600):
                if (found := last.receives.get(21)) is not None and found.rec.state == "complete":
                    break
                await asyncio.sleep(0.05)
            a, b = relay.receive(20).view(), last.receive(21).view()
            assert (a.state, b.state) == ("complete", "complete"), (a, b)
            assert a.received_bytes < 0.6 * a.size and b.received_bytes < 0.6 * b.size, (a, b)
            for copy in (relay.receive(20).path, last.receive(21).path):
                assert copy.read_bytes() == staging.path(name).read_bytes()
        finally:
            await last.stop()
            await relay.stop()

    asyncio.run(scenario())


def test_a_stream_that_gives_up_on_compression_goes_on_plain_in_the_same_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where compression stops paying, the rest of the session crosses as a plain stream: the
    copy arrives whole, nothing is sent twice, and that second stream is no resume (the
    receive's resumed_from stays where the session began)."""
    monkeypatch.setattr(wire_codec, "MIN_GAIN", float("inf"))  # compression never pays here
    monkeypatch.setattr(wire_codec, "HEADROOM", float("inf"))
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-1-0a1b2c3d.raw"
    os_like_raw(staging.path(name), (wire_codec.GIVE_UP_AFTER + 4) * CHUNK)
    signer = TicketSigner(tmp_path / "key")

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        target = TargetAgent(tmp_path / "target", signer)
        target.sender.codecs = CODECS
        await target.start()
        try:
            await send(ready, target, task_id=5, task_uid=secrets.token_hex(16), codecs=CODECS)
            view = target.receive(5).view()
            assert view.state == "complete", view
            assert view.resumed_from == 0, view
            # the first chunk went compressed, the other GIVE_UP_AFTER - 1 of the first stream
            # and the 4 of the plain one crossed as they are
            assert view.size - 2 * CHUNK < view.received_bytes < view.size, view
            assert target.receive(5).path.read_bytes() == staging.path(name).read_bytes()
        finally:
            await target.stop()

    asyncio.run(scenario())

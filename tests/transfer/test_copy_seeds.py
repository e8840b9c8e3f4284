"""A node that holds an earlier version of an image receives only what it lacks: the chunks
of the new version it holds already are taken from its disk (each checked against the
signed manifest), even when the new qcow2's layout has shifted in the file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from agent.staging import Staging
from agent.transfer.guest_image import GuestImage, map_file
from agent.transfer.seeds import index_chunks, manifest_offsets
from shared.frames import CHUNK
from shared.messages.transfers import Seed
from shared.tickets import TicketSigner
from tests.support.images import compare
from tests.support.transfers import TargetAgent, send, send_chain, staged_manifest

MiB = 1 << 20
V1_VMID = 9001


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=300)


def _v1_raw(path: Path, virtual: int, data: int) -> None:
    """``data`` random bytes in 8 regions spread over a sparse raw file."""
    region = data // 8
    with open(path, "wb") as f:
        f.truncate(virtual)
        for i in range(8):
            f.seek(i * (virtual // 8) + 3 * MiB + 12345)
            f.write(os.urandom(region))


def _v2_from(v1_raw: Path, v2_raw: Path, data: int) -> None:
    """v2: ~5 % of v1's data rewritten in three regions, and two regions zeroed, none of
    them on the chunk grid."""
    v2_raw.write_bytes(b"")
    _qemu_img("convert", "-f", "raw", "-O", "raw", str(v1_raw), str(v2_raw))
    with open(v2_raw, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        for at in (5 * MiB + 4097, size // 3 + 777, size // 2 + 3 * MiB + 1):
            f.seek(at)
            f.write(os.urandom(int(0.05 * data) // 3))
        for at, length in (
            (size // 8 + 3 * MiB + 20000, 9 * MiB + 1234),
            (size * 5 // 8 + 6 * MiB + 5, 6 * MiB + 99),
        ):
            f.seek(at)
            f.write(bytes(length))


class RawVersions(NamedTuple):
    """v1 on the target's disk (VM V1_VMID's), v2 staged at the source; both raw."""

    v1: Path
    staging: Staging
    name: str
    signer: TicketSigner
    seed: Seed


def raw_versions(tmp_path: Path, virtual: int, data: int) -> RawVersions:
    v1, v2_raw = tmp_path / "vm-9001-disk-0.raw", tmp_path / "v2.raw"
    _v1_raw(v1, virtual, data)
    _v2_from(v1, v2_raw, data)
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-2-0a1b2c3d.raw"
    os.replace(v2_raw, staging.path(name))
    seed = Seed(vmid=V1_VMID, volume_id="local:9001/vm-9001-disk-0.raw")
    return RawVersions(v1, staging, name, TicketSigner(tmp_path / "key"), seed)


@pytest.mark.slow
def test_a_node_holding_v1_receives_at_most_a_tenth_of_v2(tmp_path: Path) -> None:
    data = 1024 * MiB
    v1_raw, v2_raw = tmp_path / "v1.raw", tmp_path / "v2.raw"
    _v1_raw(v1_raw, 2048 * MiB, data)
    _v2_from(v1_raw, v2_raw, data)
    # v1 is on the target as PVE imported it (qcow2); v2 is a rebuilt qcow2 whose clusters
    # sit elsewhere in the file than v1's (the zeroed regions are gone from it).
    v1 = tmp_path / "vm-9001-disk-0.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(v1_raw), str(v1))
    staging = Staging(tmp_path / "source" / "staging")
    name = "upload-2-0a1b2c3d.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(v2_raw), str(staging.path(name)))
    v2_file_size = staging.path(name).stat().st_size
    signer = TicketSigner(tmp_path / "key")

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        target = TargetAgent(tmp_path / "target", signer, {V1_VMID: (v1, "qcow2")})
        await target.start()
        try:
            seed = Seed(vmid=V1_VMID, volume_id="local:9001/vm-9001-disk-0.qcow2")
            await send(ready, target, task_id=3, task_uid=secrets.token_hex(16), seeds=[seed])
            receive = target.receive(3)
            view = receive.view()
            assert view.state == "complete", view
            assert view.received_bytes <= 0.10 * v2_file_size, (view.received_bytes, v2_file_size)
            assert view.received_bytes + view.reused_bytes == view.size
            assert view.corrupt_reused == 0
            result = compare(receive.path, "raw", staging.path(name), "qcow2")
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            await target.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_corrupt_chunk_of_the_seed_is_detected_and_fetched(tmp_path: Path) -> None:
    v1, staging, name, signer, seed = raw_versions(tmp_path, 256 * MiB, 64 * MiB)

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        target = TargetAgent(tmp_path / "target", signer, {V1_VMID: (v1, "raw")})
        await target.start()
        try:
            held = await target.seeds.for_session([seed])  # indexed while the disk was sound
            shared = [i for i, d in enumerate(ready.manifest.chunks) if d and held.held(d)]
            assert len(shared) >= 10
            # The disk rots under one chunk v2 shares with v1; the file's mtime does not move.
            st = v1.stat()
            with open(v1, "r+b") as f:
                f.seek(shared[3] * CHUNK + 1000)
                f.write(b"rot")
            os.utime(v1, ns=(st.st_atime_ns, st.st_mtime_ns))

            await send(ready, target, task_id=4, task_uid=secrets.token_hex(16), seeds=[seed])
            receive = target.receive(4)
            view = receive.view()
            assert view.state == "complete", view
            assert view.corrupt_reused == 1 and receive.rec.refused_seeds == [shared[3]]
            registry = target.receives.metrics.registry  # what the agent's /metrics says
            assert registry.get_sample_value("pvesphere_agent_corrupt_reused_chunks_total") == 1
            # The rotten chunk came over the network; the copy is v2 exactly.
            assert receive.path.read_bytes() == staging.path(name).read_bytes()
        finally:
            await target.stop()

    asyncio.run(scenario())


def test_an_image_the_node_holds_whole_crosses_nothing(tmp_path: Path) -> None:
    """Every chunk is a hole or held: the stream is empty, the target makes the copy alone."""
    _v1, staging, name, signer, _seed = raw_versions(tmp_path, 64 * MiB, 16 * MiB)
    same = tmp_path / "vm-9002-disk-0.raw"
    same.write_bytes(staging.path(name).read_bytes())

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        target = TargetAgent(tmp_path / "target", signer, {9002: (same, "raw")})
        await target.start()
        try:
            seed = Seed(vmid=9002, volume_id="local:9002/vm-9002-disk-0.raw")
            await send(ready, target, task_id=5, task_uid=secrets.token_hex(16), seeds=[seed])
            receive = target.receive(5)
            view = receive.view()
            assert view.state == "complete", view
            assert (view.received_bytes, view.reused_bytes) == (0, 64 * MiB)
            assert receive.path.read_bytes() == staging.path(name).read_bytes()
        finally:
            await target.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_relay_serves_the_next_node_only_the_chunks_it_lacks(tmp_path: Path) -> None:
    """Node A has no earlier version, node B has v1: the source sends A every chunk with
    data, A relays to B only what B lacks, from its own verified copy."""
    v1, staging, name, signer, seed = raw_versions(tmp_path, 256 * MiB, 64 * MiB)

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        relay = TargetAgent(tmp_path / "a", signer)
        last = TargetAgent(tmp_path / "b", signer, {V1_VMID: (v1, "raw")})
        await relay.start()
        await last.start()
        try:
            held = await last.seeds.for_session([seed])
            await send_chain(
                ready, [(relay, 10, secrets.token_hex(16), []), (last, 11, secrets.token_hex(16), [seed])]
            )
            for _ in range(600):
                if (found := last.receives.get(11)) is not None and found.rec.state == "complete":
                    break
                await asyncio.sleep(0.05)
            data = sum(ready.manifest.span(i)[1] for i, d in enumerate(ready.manifest.chunks) if d)
            lacked = sum(
                ready.manifest.span(i)[1]
                for i, d in enumerate(ready.manifest.chunks)
                if d and not held.held(d)
            )
            a, b = relay.receive(10).view(), last.receive(11).view()
            assert (a.state, b.state) == ("complete", "complete"), (a, b)
            assert a.received_bytes == data and b.received_bytes == lacked < data / 3
            for copy in (relay.receive(10).path, last.receive(11).path):
                assert copy.read_bytes() == staging.path(name).read_bytes()
        finally:
            await last.stop()
            await relay.stop()

    asyncio.run(scenario())


def test_an_index_recorded_from_the_manifest_is_what_reading_the_disk_finds(tmp_path: Path) -> None:
    """An import records its disk's index from the copy's manifest (imported_seeds.py): the
    next version's session uses it as it is, and it is the index a read would make."""
    v1, staging, _name, signer, seed = raw_versions(tmp_path, 64 * MiB, 16 * MiB)
    v1_name = "upload-1-0a1b2c3d.raw"
    (staging.path(v1_name)).write_bytes(v1.read_bytes())

    async def scenario() -> None:
        v1_ready = await staged_manifest(staging, v1_name)
        read = index_chunks(GuestImage(v1, await map_file(v1, "raw", tmp_path)))
        assert manifest_offsets(v1_ready.manifest) == read and len(read) >= 4
        target = TargetAgent(tmp_path / "target", signer, {V1_VMID: (v1, "raw")})
        target.seeds.record(v1, "raw", v1_ready.manifest)
        held = await target.seeds.for_session([seed])
        assert [i.offsets for i in held.indexes] == [read]
        await target.seeds.close()

    asyncio.run(scenario())
    staging.path(v1_name).unlink()


def test_a_stale_recorded_index_costs_a_network_fetch_never_a_corrupt_copy(tmp_path: Path) -> None:
    """The disk changed after its index was recorded, and its mtime was put back: the chunks
    the index names no longer match the manifest, are refused one by one and fetched."""
    v1, staging, name, signer, seed = raw_versions(tmp_path, 64 * MiB, 16 * MiB)
    v1_name = "upload-1-0a1b2c3d.raw"
    (staging.path(v1_name)).write_bytes(v1.read_bytes())

    async def scenario() -> None:
        v1_ready = await staged_manifest(staging, v1_name)
        ready = await staged_manifest(staging, name)
        target = TargetAgent(tmp_path / "target", signer, {V1_VMID: (v1, "raw")})
        await target.start()
        try:
            target.seeds.record(v1, "raw", v1_ready.manifest)
            offsets = manifest_offsets(v1_ready.manifest)
            shared = [i for i, d in enumerate(ready.manifest.chunks) if d in offsets]
            assert len(shared) >= 2
            st = v1.stat()
            with open(v1, "r+b") as f:
                for index in shared[:2]:
                    f.seek(offsets[ready.manifest.chunks[index]] + 5)
                    f.write(b"changed")
            os.utime(v1, ns=(st.st_atime_ns, st.st_mtime_ns))
            receive = None
            for attempt in range(1, 4):  # each refused chunk fails one stream; the next resumes
                with contextlib.suppress(Exception):
                    await send(ready, target, task_id=6, task_uid="a" * 32, epoch=attempt, seeds=[seed])
                receive = target.receive(6)
                if receive.rec.state == "complete":
                    break
            assert receive is not None and receive.rec.state == "complete", receive and receive.view()
            assert sorted(receive.rec.refused_seeds) == shared[:2]
            assert receive.path.read_bytes() == staging.path(name).read_bytes()
        finally:
            await target.stop()

    asyncio.run(scenario())
    staging.path(v1_name).unlink()

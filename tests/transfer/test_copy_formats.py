"""Images whose guest view cannot be read in place (compressed qcow2 clusters, VMDK) are
converted to raw once at the source; the copy is the guest view all the same."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path

import pytest

from agent.staging import Staging
from agent.transfer.manifests import StagedManifests
from shared.tickets import TicketSigner
from tests.support.images import compare
from tests.support.transfers import TargetAgent, send, staged_manifest

MiB = 1 << 20


def _compressible_raw(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        for at in (3 * MiB + 7, 30 * MiB):
            f.seek(at)
            f.write(b"text compresses well " * (6 * MiB // 21))


@pytest.mark.parametrize(
    ("fmt", "options"), [("qcow2", ["-c"]), ("vmdk", ["-o", "subformat=streamOptimized"])]
)
def test_an_image_read_through_its_raw_conversion_arrives_as_the_guest_sees_it(
    tmp_path: Path, fmt: str, options: list[str]
) -> None:
    raw = tmp_path / "src.raw"
    _compressible_raw(raw)
    staging = Staging(tmp_path / "source" / "staging")
    name = f"upload-4-0a1b2c3d.{fmt}"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(staging.path(name))],
        check=True,
        timeout=120,
    )

    asked: list[tuple[int, str]] = []

    async def make_room(need: int, purpose: str) -> None:
        asked.append((need, purpose))

    async def scenario() -> None:
        ready = await staged_manifest(staging, name, make_room)
        assert ready.image.path == staging.beside / f"{name}.raw"  # read from the conversion
        # Room for it was asked of the staging budget first: the guest's data, not its size.
        # (12 MiB of text, give or take a cluster at the edges)
        ((need, purpose),) = asked
        assert 12 * MiB <= need <= 13 * MiB and purpose == f"the raw conversion of {name}", asked
        target = TargetAgent(tmp_path / "target", TicketSigner(tmp_path / "key"))
        await target.start()
        try:
            await send(ready, target, task_id=7, task_uid=secrets.token_hex(16))
            receive = target.receive(7)
            assert receive.view().state == "complete"
            assert receive.view().received_bytes == 5 * 4 * MiB  # the 5 chunks with text in them
            assert compare(receive.path, "raw", staging.path(name), fmt).returncode == 0
        finally:
            await target.stop()
        # The conversion and the manifest go with the staged image.
        staging.remove(name)
        assert list(staging.beside.glob(f"{name}.*")) == []

    asyncio.run(scenario())


def test_a_staged_upload_read_in_place_has_its_manifest_built_unasked_a_converted_one_not(
    tmp_path: Path,
) -> None:
    """manifests.py ``prepare``: an upload that lands is hashed beside its import if it is
    read in place; one that needs a raw conversion costs no staging space until a copy asks."""
    raw = tmp_path / "src.raw"
    _compressible_raw(raw)
    staging = Staging(tmp_path / "source" / "staging")
    plain, compressed = "upload-5-0a1b2c3d.qcow2", "upload-6-0a1b2c3d.qcow2"
    for name, options in ((plain, []), (compressed, ["-c"])):
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, str(raw), str(staging.path(name))],
            check=True,
            timeout=120,
        )

    async def scenario() -> None:
        manifests = StagedManifests(staging)
        manifests.prepare(plain)
        manifests.prepare(compressed)
        built = None
        for _ in range(200):  # (the build starts once qemu-img map has answered)
            if (built := await manifests.built(plain, 30.0)) is not None:
                break
            await asyncio.sleep(0.05)
        assert built is not None and built.size == 64 * MiB
        assert compressed not in manifests._builds  # not even started
        await manifests.close()
        assert manifests.cached(compressed) is None
        assert not (staging.beside / f"{compressed}.raw").exists()  # no conversion made

    asyncio.run(scenario())
    for name in (plain, compressed):
        staging.remove(name)

"""A target killed in the middle of a delta copy (seeded, with holes) resumes where its
verified prefix ends, and the copy is the new version exactly."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import pytest

from shared.frames import CHUNK
from tests.support.transfers import TargetAgent, send, staged_manifest
from tests.transfer.test_copy_seeds import V1_VMID, raw_versions

MiB = 1 << 20


@pytest.mark.slow
def test_a_target_killed_mid_delta_resumes_from_its_verified_prefix(tmp_path: Path) -> None:
    v1, staging, name, signer, seed = raw_versions(tmp_path, 512 * MiB, 128 * MiB)
    uid = secrets.token_hex(16)

    async def scenario() -> None:
        ready = await staged_manifest(staging, name)
        first = TargetAgent(tmp_path / "target", signer, {V1_VMID: (v1, "raw")})
        await first.start()
        # Slow: 2 chunks a second, so that it is killed with some of the chunks it lacks in.
        sending = asyncio.create_task(send(ready, first, task_id=6, task_uid=uid, seeds=[seed], rate=8 * MiB))
        for _ in range(600):
            await asyncio.sleep(0.05)
            receive = first.receives.get(6)
            if receive is not None and receive.rec.received_bytes >= 3 * CHUNK:
                break
        receive = first.receive(6)
        killed_at = receive.rec.verified
        assert 0 < killed_at < ready.manifest.size and receive.rec.reused_bytes > 0
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await first.stop()
        # Killed in the middle of a write: part of the next chunk made it to the file.
        with open(receive.part_path, "ab") as part:
            part.write(b"torn" * 1000)

        # The agent comes back: its receives are read from disk, the partial file's length
        # is how far the copy got.
        again = TargetAgent(tmp_path / "target", signer, {V1_VMID: (v1, "raw")})
        await again.start()
        try:
            assert again.receive(6).rec.verified >= killed_at
            await send(ready, again, task_id=6, task_uid=uid, epoch=2, seeds=[seed])
            view = again.receive(6).view()
            assert view.state == "complete", view
            assert view.resumed_from >= killed_at
            # What crossed the network is the chunks v1 lacks, each once (give or take the
            # one in flight at the kill): nothing verified before it came again.
            held = await again.seeds.for_session([seed])
            lacked = sum(
                ready.manifest.span(i)[1]
                for i, d in enumerate(ready.manifest.chunks)
                if d and not held.held(d)
            )
            assert lacked <= view.received_bytes <= lacked + CHUNK
            assert again.receive(6).path.read_bytes() == staging.path(name).read_bytes()
        finally:
            await again.stop()

    asyncio.run(scenario())

"""The sync receiver's chunk writer: what it leaves in the file and how it lets go of it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent.transfer.chunk_writer import ChunkWriter, RunningHash
from shared.frames import Frame, chunk_digest


def test_closing_twice_never_closes_a_descriptor_that_is_someone_else_s_by_then(tmp_path: Path) -> None:
    async def run() -> None:
        path = tmp_path / "copy.part"
        data = os.urandom(3 << 20)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        landed: list[int] = []
        writer = ChunkWriter(fd, path, 0, RunningHash(), lambda _frame, end: landed.append(end))
        await writer.prepare()
        await writer.write(Frame(0, chunk_digest(data), [memoryview(data)]))
        await writer.drain()
        await writer.close()  # a failure path closes first...
        other = os.open(tmp_path / "someone-else", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            await writer.close()  # ...and the end of the stream again
            os.fstat(other)  # still open: the second close left it alone
        finally:
            os.close(other)
            os.close(fd)
        assert landed == [len(data)]
        assert path.read_bytes() == data

    asyncio.run(run())

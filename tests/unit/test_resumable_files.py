"""A resumable upload's partial file on the agent (agent/resumable.py): appended at its size,
what a broken body brought kept, never more than the declared length, one writer at a time."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.resumable import ResumableFiles, UploadBusy
from agent.staging import Staging
from agent.upload_writer import UploadTooLarge


async def _pieces(*pieces: bytes, then: Exception | None = None) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
    if then is not None:
        raise then


def test_appends_at_its_size_and_hashes_the_whole_file(tmp_path: Path) -> None:
    files = ResumableFiles(Staging(tmp_path))

    async def run() -> tuple[int, str]:
        assert files.held(5) is None
        assert files.create(5) == 0
        assert await files.append(5, 0, 10, _pieces(b"abc", b"de")) == 5
        assert await files.append(5, 5, 10, _pieces(b"fghij")) == 10
        return files.held(5) or 0, await files.sha256(5)

    held, digest = asyncio.run(run())
    assert held == 10 and digest == hashlib.sha256(b"abcdefghij").hexdigest()
    assert files.path(5).name == "upload-5-resumable"
    assert Staging(tmp_path).upload_mtimes().keys() == {5}  # (the janitor sees it)
    assert Staging(tmp_path).remove_partials() == []  # (an agent restart keeps it)


def test_a_body_that_breaks_off_keeps_what_came(tmp_path: Path) -> None:
    files = ResumableFiles(Staging(tmp_path))
    files.create(6)
    with pytest.raises(ConnectionResetError):
        asyncio.run(files.append(6, 0, 100, _pieces(b"x" * 7, then=ConnectionResetError())))
    assert files.held(6) == 7


def test_more_than_the_length_keeps_nothing_of_that_body(tmp_path: Path) -> None:
    files = ResumableFiles(Staging(tmp_path))
    files.create(7)
    asyncio.run(files.append(7, 0, 10, _pieces(b"1234")))
    with pytest.raises(UploadTooLarge):
        asyncio.run(files.append(7, 4, 10, _pieces(b"56", b"7890", b"!")))
    assert files.held(7) == 4


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    files = ResumableFiles(Staging(tmp_path), turn_wait=0.1)

    async def run() -> None:
        async with files.turn(8):
            with pytest.raises(UploadBusy):
                async with files.turn(8):
                    pass
        async with files.turn(8):  # (let go: the next one has it)
            pass

    asyncio.run(run())

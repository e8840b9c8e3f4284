"""`upload --resumable` (client/resumable.py): an interrupted PATCH is retried from the offset
HEAD gives, the bar goes back to it, and after too many failures the command says how to go
on (--resume ID); a refusal that will not change is not retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client import resumable
from client.answers import ApiFailure, Unreachable


class FakeBar:
    def __init__(self) -> None:
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n

    def at(self, done: int) -> None:
        self.done = done

    def close(self) -> None:
        pass


class FakeApi:
    """A server holding ``held`` bytes; each PATCH takes ``takes[i]`` bytes and then fails
    (Unreachable) unless it got to the end."""

    def __init__(self, size: int, takes: list[int], fail: Exception | None = None) -> None:
        self.size, self.held, self.takes = size, 0, takes
        self.fail = fail or Unreachable("connection reset")
        self.patched_at: list[int] = []

    async def tus_offset(self, upload_id: int) -> tuple[int, int]:
        return self.held, self.size

    async def tus_patch(self, upload_id: int, file: Path, offset: int, on_bytes: object) -> int:
        assert offset == self.held
        self.patched_at.append(offset)
        take = self.takes.pop(0) if self.takes else self.size
        sent = min(take, self.size - offset)
        on_bytes(sent + 100)  # type: ignore[operator]  # (bytes in flight, lost)
        self.held += sent
        if self.held < self.size:
            raise self.fail
        return self.held


def _run(api: FakeApi, file: Path, bar: FakeBar) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    notes: list[str] = []
    asyncio.run(resumable.send(api, file, 7, bar, notes.append, sleep))  # type: ignore[arg-type]
    return waits


def test_an_interrupted_patch_goes_on_from_the_servers_offset(tmp_path: Path) -> None:
    file = tmp_path / "x.qcow2"
    file.write_bytes(b"\1" * 1000)
    api, bar = FakeApi(1000, [300, 200]), FakeBar()
    waits = _run(api, file, bar)
    assert api.patched_at == [0, 300, 500]
    assert waits == [1.0, 2.0]  # (backoff; a PATCH that succeeds resets it)
    assert bar.done == 1000


def test_after_too_many_failures_it_says_how_to_resume(tmp_path: Path) -> None:
    file = tmp_path / "x.qcow2"
    file.write_bytes(b"\1" * 1000)
    api = FakeApi(1000, [0] * 50)
    with pytest.raises(resumable.GaveUp, match="--resume 7"):
        _run(api, file, FakeBar())
    assert len(api.patched_at) == resumable.RETRIES + 1


def test_a_refusal_that_will_not_change_is_not_retried(tmp_path: Path) -> None:
    file = tmp_path / "x.qcow2"
    file.write_bytes(b"\1" * 1000)
    api = FakeApi(1000, [10], fail=ApiFailure(422, "image rejected", "image_rejected"))
    with pytest.raises(ApiFailure, match="image rejected"):
        _run(api, file, FakeBar())
    assert api.patched_at == [0]


def test_another_files_upload_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "x.qcow2"
    file.write_bytes(b"\1" * 999)
    with pytest.raises(ApiFailure, match="1000 bytes"):
        _run(FakeApi(1000, []), file, FakeBar())

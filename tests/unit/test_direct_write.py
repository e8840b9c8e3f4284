"""Staged images written around the page cache must still come out byte for byte."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from shared.direct_write import ALIGN, BUFFER, SequentialWriter, open_for_writing


@pytest.mark.parametrize("start", [0, 3 * ALIGN, BUFFER, 1234])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_pieces_from_any_offset_land_exactly(tmp_path: Path, start: int, seed: int) -> None:
    rng = random.Random(seed)
    before = rng.randbytes(start)
    data = rng.randbytes(rng.randint(3 * BUFFER, 5 * BUFFER) + rng.randint(0, ALIGN))
    path = tmp_path / "image.part"
    path.write_bytes(before)  # a verified prefix from an earlier stream
    fd, direct = open_for_writing(path, os.O_WRONLY | os.O_CLOEXEC)
    writer = SequentialWriter(fd, start, direct)
    try:
        at = 0
        while at < len(data):
            pieces = []
            for _ in range(rng.randint(1, 4)):
                n = rng.randint(1, BUFFER)
                pieces.append(memoryview(data)[at : at + n])
                at += n
            writer.write(pieces)
            if rng.random() < 0.3:
                writer.flush()
                assert os.path.getsize(path) == start + min(at, len(data))  # all of it is in the file
        writer.flush()
    finally:
        writer.close()
        os.close(fd)
    assert path.read_bytes() == before + data
    assert writer.offset == start + len(data)


def test_a_disk_that_fills_up_says_so_and_the_writer_still_closes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], check=True)
    try:
        fd, direct = open_for_writing(mount / "x", os.O_WRONLY | os.O_CREAT)
        writer = SequentialWriter(fd, 0, direct)
        with pytest.raises(OSError) as failed:
            for _ in range(8):
                writer.write([os.urandom(BUFFER)])
                writer.flush()
        assert failed.value.errno == 28  # ENOSPC
        writer.close()  # even with the failed write's traceback still around
        os.close(fd)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)

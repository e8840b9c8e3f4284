"""Writing staged images around the page cache (O_DIRECT).

A staged image is written once, fsynced, and read once more (by the import, or by a
sync sender). Through the page cache every byte is copied into a freshly allocated page
that the kernel must first reclaim from someone else (on a PVE node: the VMs' cache),
and the final fsync then waits for all of it. Writing whole aligned blocks straight to
the disk skips both. Measured on this machine, 2 GiB in 4 MiB writes: buffered 1.3-4.2
CPU seconds plus 0.9 s of fsync; O_DIRECT from an aligned buffer 0.22 CPU seconds and
nothing left to sync.

O_DIRECT wants the buffer, the length and the file offset aligned: data is gathered in
an aligned buffer and written a full buffer at a time; a tail that is not a whole block
(the end of the image) is written through the page cache. A filesystem that refuses
O_DIRECT (EINVAL) gets ordinary writes throughout.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from collections.abc import Sequence

ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks
BUFFER = 4 << 20


def open_for_writing(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> tuple[int, bool]:
    """os.open with O_DIRECT where the filesystem allows it; (fd, direct)."""
    try:
        return os.open(path, flags | os.O_DIRECT, mode), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    return os.open(path, flags, mode), False


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


class SequentialWriter:
    """Writes a stream of pieces to ``fd`` from ``offset`` on, in order.

    Only what ``flush`` has returned from is certainly in the file; before that, up to
    one buffer of data may be waiting for a whole block.
    """

    def __init__(self, fd: int, offset: int, direct: bool) -> None:
        self.fd = fd
        self.offset = offset  # where the buffered data goes
        self.direct = direct
        self._buf = mmap.mmap(-1, BUFFER) if direct else None
        self._filled = 0

    def write(self, pieces: Sequence[bytes | memoryview], aligned: bool = False) -> None:
        """``aligned``: ``pieces`` is one page-aligned buffer; its whole blocks are written
        straight from it when nothing is waiting before them (no copy)."""
        if self._buf is None:
            self._writev(pieces)
            return
        if aligned and len(pieces) == 1 and self._filled == 0 and self.offset % ALIGN == 0:
            data = memoryview(pieces[0]).cast("B")
            whole = len(data) - len(data) % ALIGN
            if whole:
                self._pwrite_blocks(data[:whole])
                self.offset += whole
                pieces = [data[whole:]]
        for piece in pieces:
            data = memoryview(piece).cast("B")
            while data:
                n = min(len(data), BUFFER - self._filled)
                self._buf[self._filled : self._filled + n] = data[:n]
                self._filled += n
                data = data[n:]
                if self._filled == BUFFER:
                    self._write_out(final=False)

    def flush(self) -> None:
        """Everything written so far is in the file (not necessarily on disk: fsync)."""
        if self._buf is not None and self._filled:
            self._write_out(final=True)

    def close(self) -> None:
        if self._buf is not None:
            # A traceback of a failed write may still hold a view of the buffer; then it
            # goes when that does.
            with contextlib.suppress(BufferError):
                self._buf.close()
            self._buf = None

    def _writev(self, pieces: Sequence[bytes | memoryview]) -> None:
        views = [memoryview(p) for p in pieces]
        while views:
            done = os.pwritev(self.fd, views, self.offset)
            self.offset += done
            while views and done >= len(views[0]):
                done -= len(views[0])
                views = views[1:]
            if done:
                views = [views[0][done:], *views[1:]]

    def _pwrite_blocks(self, data: memoryview) -> None:
        """Whole blocks from an aligned buffer at the (aligned) offset."""
        try:
            _pwrite_all(self.fd, data, self.offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self.direct:
                raise
            # The filesystem took the flag at open but not the write: go buffered.
            _set_direct(self.fd, False)
            self.direct = False
            _pwrite_all(self.fd, data, self.offset)

    def _write_out(self, final: bool) -> None:
        assert self._buf is not None
        data = memoryview(self._buf)[: self._filled]
        try:
            whole = self._filled - self._filled % ALIGN if self.offset % ALIGN == 0 else 0
            if whole:
                self._pwrite_blocks(data[:whole])
                self.offset += whole
            rest = self._filled - whole
            if rest and (final or whole == 0):
                # Not a whole block (or not at a block boundary): through the page cache.
                if self.direct:
                    _set_direct(self.fd, False)
                _pwrite_all(self.fd, data[whole : self._filled], self.offset)
                if self.direct:
                    _set_direct(self.fd, True)
                self.offset += rest
                rest = 0
            if rest:
                self._buf.move(0, whole, rest)
            self._filled = rest
        finally:
            data.release()

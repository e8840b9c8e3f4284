"""Progress as the user sees it: rich's bars on a terminal, plain lines otherwise.

Two shapes: the upload's byte bar (bytes sent, rate, time left), and a board of one bar
per piece of work (the import on its node, each sync task, a clone) fed by state
changes. Not on a terminal (a pipe, a log file, CI) nothing is redrawn: a line is
written when a piece of work changes status or passes a quarter, so a log reads as a
history without a single escape sequence.
"""

from __future__ import annotations

import time
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from client import text
from client.work import Item


class ByteBar(Protocol):
    def advance(self, n: int) -> None: ...
    def at(self, done: int) -> None:
        """Where the bytes stand (a resumed upload goes on from what the server holds)."""

    def close(self) -> None: ...


class Board(Protocol):
    def show(self, item: Item) -> None: ...
    def close(self) -> None: ...


def byte_bar(label: str, total: int, stream: IO[str], plain: bool) -> ByteBar:
    return PlainByteBar(label, total, stream) if plain else RichByteBar(label, total, stream)


def board(items: list[Item], stream: IO[str], plain: bool) -> Board:
    return PlainBoard(items, stream) if plain else RichBoard(items, stream)


# ------------------------------------------------------------------ rich (a terminal)


class RichByteBar:
    def __init__(self, label: str, total: int, stream: IO[str]) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._task = self._progress.add_task(label, total=total)
        self._progress.start()

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def at(self, done: int) -> None:
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        self._progress.stop()


class RichBoard:
    def __init__(self, items: list[Item], stream: IO[str]) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._tasks: dict[tuple[str, int], TaskID] = {
            (i.kind, i.id): self._progress.add_task(i.label, total=100, detail=detail(i)) for i in items
        }
        self._progress.start()

    def show(self, item: Item) -> None:
        self._progress.update(self._tasks[(item.kind, item.id)], completed=item.progress, detail=detail(item))

    def close(self) -> None:
        self._progress.stop()


def detail(item: Item) -> str:
    """'syncing 12.0 MiB of 48.0 MiB, 30.0 MiB/s' or 'failed: why'."""
    if item.error and item.final and not item.ok:
        return f"{item.status}: {item.error}"
    parts = [item.status]
    # An upload's bytes are the file's (the byte bar showed them); its bar is the import's.
    if item.bytes_total and item.kind != "upload":
        parts.append(f"{text.size(item.bytes_done or 0)} of {text.size(item.bytes_total)}")
    if item.rate and not item.final and item.kind != "upload":
        parts.append(text.rate(item.rate))
    return " ".join(parts)


# ------------------------------------------------------------------ plain lines


class PlainByteBar:
    """'upload x.qcow2: 50% 24.0 MiB of 48.0 MiB, 40.0 MiB/s, 1s left' at each quarter."""

    def __init__(self, label: str, total: int, stream: IO[str]) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = 0
        self.started = time.monotonic()
        self._quarter = 0

    def advance(self, n: int) -> None:
        self.done += n
        quarter = 4 * self.done // self.total if self.total else 4
        if quarter > self._quarter:
            self._quarter = quarter
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def at(self, done: int) -> None:
        self.done = done

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        speed = self.done / elapsed
        left = (self.total - self.done) / speed if speed and self.done < self.total else 0
        percent = 100 * self.done // self.total if self.total else 100
        return (
            f"{self.label}: {percent}% {text.size(self.done)} of {text.size(self.total)}, "
            f"{text.rate(speed)}, {text.duration(left)} left"
        )

    def close(self) -> None:
        pass


class PlainBoard:
    """A line per status change and per quarter passed."""

    def __init__(self, items: list[Item], stream: IO[str]) -> None:
        self.stream = stream
        self._seen: dict[tuple[str, int], tuple[str, int]] = {}
        for item in items:
            self.show(item)

    def show(self, item: Item) -> None:
        key = (item.kind, item.id)
        mark = (item.status, item.progress // 25)
        if self._seen.get(key) == mark:
            return
        self._seen[key] = mark
        self.stream.write(f"{item.label}: {item.progress}% {detail(item)}\n")
        self.stream.flush()

    def close(self) -> None:
        pass

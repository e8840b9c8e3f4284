"""What every benchmark gets (options) and gives back (targets), and how it says it cannot run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import Target


class Skip(Exception):
    """The benchmark cannot run here; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Options:
    quick: bool
    reps: int
    workdir: Path
    """A directory of this benchmark's own, removed after the run unless ``keep``."""
    keep: bool = False


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    run: Callable[[Options], list[Target]]

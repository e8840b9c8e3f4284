"""Targets (a measured figure against a limit) and plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from benchmarks.measure import CpuSplit, median

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Target:
    """``measured op limit`` must hold; ``measured`` is None when it could not be measured."""

    name: str
    measured: float | None
    op: Literal["<=", ">="]
    limit: float
    unit: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "SKIP"
        ok = self.measured <= self.limit if self.op == "<=" else self.measured >= self.limit
        return "PASS" if ok else "MISS"

    @property
    def ratio(self) -> float | None:
        """measured / limit: <= 1 passes an upper limit, >= 1 passes a lower one."""
        if self.measured is None or self.limit == 0:
            return None
        return self.measured / self.limit

    def line(self, prefix: str = "") -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.measured is None:
            figures = f"not measured (target {self.op} {self.limit:g}{unit})"
        else:
            ratio = self.ratio
            of = "" if ratio is None else f"  ({ratio:.2f} of target)"
            figures = f"{self.measured:.2f}{unit} {self.op} {self.limit:g}{unit}{of}"
        note = f"  [{self.note}]" if self.note else ""
        return f"{self.verdict}  {prefix}{self.name}: {figures}{note}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right."""
    widths = [max(len(str(cell)) for cell in col) for col in zip(headers, *rows, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in rows)])


def size_label(size: int) -> str:
    if size >= GIB and size % GIB == 0:
        return f"{size // GIB} GiB"
    return f"{size / MIB:g} MiB"


def mib(size: float) -> str:
    return f"{size / MIB:.1f}"


def mb_per_s(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:.0f}"


SPLIT_COLUMNS = {
    "main_user": "event loop user",
    "main_system": "event loop sys",
    "other_user": "other threads user",
    "other_system": "other threads sys",
}


def cpu_split_table(splits: dict[str, list[CpuSplit]], scale: float = 1.0, first: str = "process") -> str:
    """One row per process: the median of each part (event loop / other threads, user / system) / scale."""
    rows = [
        [name, *(f"{median([getattr(s, field) for s in values]) / scale:.2f}" for field in SPLIT_COLUMNS)]
        for name, values in splits.items()
    ]
    return table([first, *SPLIT_COLUMNS.values()], rows)

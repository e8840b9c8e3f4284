"""How `pvesphere` writes numbers and tables as plain text (pure)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: float | None) -> str:
    """1536 -> '1.5 KiB'; None -> '-'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(bytes_per_sec: float | None) -> str:
    return "-" if not bytes_per_sec else f"{size(bytes_per_sec)}/s"


def duration(seconds: float | None) -> str:
    """75 -> '1m15s'; None -> '-'."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


Column = tuple[str, Callable[[Any], Any]]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(rows: Sequence[Any], columns: Sequence[Column]) -> list[str]:
    """Rows under a header, each column as wide as its widest cell, two spaces apart."""
    cells = [[header for header, _ in columns]] + [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def fields(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    """'name:  value' lines, the values lined up."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return [f"{(k + ':').ljust(width)}  {cell(v)}" for k, v in pairs]


def columns(spec: str, **getters: Callable[[Any], Any]) -> list[Column]:
    """Columns from ``"ID=id NAME=node_name LAST_SEEN=last_heartbeat_at"``: the header
    (``_`` for a space) and the row's key, or the getter of that name in ``getters``."""
    found: list[Column] = []
    for token in spec.split():
        header, _, key = token.partition("=")
        found.append((header.replace("_", " "), getters.get(key) or operator.itemgetter(key)))
    return found

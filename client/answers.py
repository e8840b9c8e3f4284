"""What the API answered, as `pvesphere` reads it (pure, and light: no HTTP library, so
that `pvesphere --help` does not pay for one): ``data``, or the error as the API words it."""

from __future__ import annotations

import json
from typing import Any

from shared.errors import PvesphereError


class ApiFailure(PvesphereError):
    """The API answered with an error envelope (or something that is not the API)."""

    def __init__(self, status: int, message: str, slug: str | None, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.slug = slug
        self.data = data

    def __str__(self) -> str:
        slug = f"{self.slug}, " if self.slug else ""
        return f"{self.message} ({slug}HTTP {self.status})"


class Unreachable(PvesphereError):
    """No answer from the coordinator: connection refused, name unknown, TLS refused."""


def unwrap(status: int, reason: str, text: str) -> Any:
    """``data`` of a success envelope; an :class:`ApiFailure` for anything else (pure)."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" not in body:
        shown = text.strip().splitlines()[0][:200] if text.strip() else reason
        raise ApiFailure(status, f"{reason}: not an answer of the API: {shown}", None)
    data = body.get("data")
    if 200 <= status < 300:
        return data
    slug = data.get("error") if isinstance(data, dict) else None
    raise ApiFailure(status, str(body.get("message") or reason), slug, data)

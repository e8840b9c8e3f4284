"""Times in API responses: RFC 3339, UTC, whole seconds, with a 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema


def _format(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


UtcTime = Annotated[
    datetime,
    PlainSerializer(_format, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2025-12-24T10:00:00Z"]}),
]

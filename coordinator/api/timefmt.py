"""Times in API responses: RFC 3339, UTC, whole seconds, with a 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from msgspec import Meta

UtcTime = Annotated[datetime, Meta(extra_json_schema={"examples": ["2025-12-24T10:00:00Z"]})]


def whole_seconds(value: datetime) -> datetime:
    """A database time as fast_json.ok must be given it (msgspec writes microseconds as they
    are): UTC, whole seconds."""
    return value.astimezone(UTC).replace(microsecond=0)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_default(value: Any) -> Any:
    """``default`` for json.dumps: the one place a response's datetimes become text."""
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

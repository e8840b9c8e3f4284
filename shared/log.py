"""One log format for every process: UTC timestamp, level, logger, message; or, with
``log_format = "json"``, one JSON object a line (``ts``, ``level``, ``logger``, ``msg``
and the record's fields) for a log shipper to index without parsing prose.

A line may carry fields: ``log.info("...", extra=fields(upload_id=7, node="pve1"))``.
In text they follow the message as ``key=value``; in JSON they are keys of the object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")
# The record attribute holding a line's fields (logging's ``extra`` sets attributes).
_FIELDS = "pvesphere_fields"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: these fields go with the line (None values are left out)."""
    return {_FIELDS: {k: v for k, v in values.items() if v is not None}}


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, _FIELDS, None)
        if not extra:
            return line
        head, sep, trace = line.partition("\n")  # fields on the message's line, before a traceback
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in extra.items())
        return f"{head} {pairs}{sep}{trace}"


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' ="\n') else text


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields}``; ``service`` and ``exc`` when there are."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            line["service"] = self.service
        for key, value in (getattr(record, _FIELDS, None) or {}).items():
            line.setdefault(key, value)  # (a field never hides the line's own keys)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(level: str = "info", service: str = "", log_format: str = "text") -> None:
    """Log to stderr (journald adds its own metadata when run under systemd)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)} (got {log_format!r})")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        prefix = f"{service} " if service else ""
        handler.setFormatter(_TextFormatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request lines from aiohttp are noise at info level; our handlers log what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

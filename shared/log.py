"""One log format for every process: UTC timestamp, level, logger, message."""

from __future__ import annotations

import logging
import sys
import time


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


def setup_logging(level: str = "info", service: str = "") -> None:
    """Log to stderr (journald adds its own metadata when run under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"{service} " if service else ""
    handler.setFormatter(_UtcFormatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request lines from aiohttp are noise at info level; our handlers log what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

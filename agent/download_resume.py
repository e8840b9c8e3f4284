"""Resuming a download that broke off mid-body (pure; agent/downloader.py does the I/O).

A new try asks for the rest, ``Range: bytes=N-``, with ``If-Range`` carrying what identified
the file on the first answer (its strong ETag, else its Last-Modified), so that a file
changed meanwhile comes back whole instead of as a tail spliced onto the old head. What the
answer means:

* 206 whose Content-Range starts at N, with the same validator: the rest, appended;
* 200: the server ignored the Range (or If-Range said the file changed): the whole file,
  written from byte 0 again;
* 206 from elsewhere, or with a validator that changed: unusable; the partial copy is
  dropped and the next try asks for the whole file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from shared.backoff import exponential

# Tries after the first one, for a connection that broke or stalled mid-body.
MAX_RESUMES = 5
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Validator:
    """What identified the file when its first answer came."""

    etag: str | None = None
    last_modified: str | None = None

    def if_range(self) -> str | None:
        """If-Range takes a strong ETag only; otherwise the date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


class Resume(Enum):
    CONTINUE = "continue"  # append the body at the offset
    RESTART = "restart"  # the body is the whole file: write it from byte 0
    REFETCH = "refetch"  # the body is of no use: drop the copy, ask for the whole file


def range_headers(offset: int, validator: Validator) -> dict[str, str]:
    """The headers of a try that has ``offset`` bytes already (none for a fresh start)."""
    if offset <= 0:
        return {}
    headers = {"Range": f"bytes={offset}-"}
    if_range = validator.if_range()
    if if_range:
        headers["If-Range"] = if_range
    return headers


def decide(offset: int, status: int, content_range: str | None, before: Validator, now: Validator) -> Resume:
    """What to do with an answer of ``status`` to a try from ``offset`` (any other status is
    the caller's error)."""
    if status == 200:
        return Resume.RESTART
    if status != 206 or offset <= 0:
        return Resume.REFETCH
    match = CONTENT_RANGE.fullmatch((content_range or "").strip())
    if match is None or int(match.group(1)) != offset:
        return Resume.REFETCH
    if (before.etag or now.etag) and before.etag != now.etag:
        return Resume.REFETCH
    if not (before.etag or now.etag) and before.last_modified != now.last_modified:
        return Resume.REFETCH
    return Resume.CONTINUE


def total_of(status: int, content_range: str | None, content_length: int | None, offset: int) -> int | None:
    """The whole file's size from an answer, when the server says it."""
    if status == 206:
        match = CONTENT_RANGE.fullmatch((content_range or "").strip())
        if match is not None and match.group(3) != "*":
            return int(match.group(3))
        return None if content_length is None else offset + content_length
    return content_length


def resume_delay(tries: int) -> float:
    """Seconds before the ``tries``-th resume."""
    return exponential(tries, BACKOFF_FIRST, BACKOFF_CAP)

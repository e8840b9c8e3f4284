"""The tus 1.0.0 resumable-upload protocol's headers, read and written (pure).

https://tus.io/protocols/resumable-upload: core (HEAD, PATCH, OPTIONS), creation (POST
with Upload-Length and Upload-Metadata), termination (DELETE) and expiration
(Upload-Expires). Every header a client sends is hostile until read here: numbers are
ASCII digits only, metadata keys and values are checked before anything sees them.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from email.utils import format_datetime

from shared.errors import PvesphereError

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "termination", "expiration")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# A metadata header bigger than this is a mistake or an attack (its values are a few fields).
METADATA_MAX = 64 << 10
_NUMBER = re.compile(r"[0-9]{1,19}")
# The spec: a key is ASCII, without spaces and commas, unique in the header.
_KEY = re.compile(r"[!-+\--~]{1,64}")


class TusHeaderError(PvesphereError, ValueError):
    """A tus header the client sent is malformed; the message names it."""


def read_number(header: str, raw: str | None) -> int:
    """``raw`` (the value of ``header``) as a non-negative integer."""
    if raw is None:
        raise TusHeaderError(f"{header} is required")
    text = raw.strip()
    # ASCII digits only: int() also takes "+5", " 5", "٥" and "1_000".
    if not _NUMBER.fullmatch(text):
        raise TusHeaderError(f"{header} must be a non-negative integer (got {raw[:40]!r})")
    return int(text)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """Upload-Metadata: ``key base64value`` pairs separated by commas (a value may be absent:
    an empty string). Values are decoded as UTF-8 text."""
    if raw is None or not raw.strip():
        return {}
    if len(raw) > METADATA_MAX:
        raise TusHeaderError(f"Upload-Metadata is longer than {METADATA_MAX} characters")
    found: dict[str, str] = {}
    for pair in raw.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise TusHeaderError(f"Upload-Metadata: {pair.strip()[:60]!r} is not 'key base64value'")
        key = parts[0]
        if not _KEY.fullmatch(key):
            raise TusHeaderError(f"Upload-Metadata: key {key[:60]!r} is not an ASCII name")
        if key in found:
            raise TusHeaderError(f"Upload-Metadata: key {key!r} is given more than once")
        found[key] = _decode_value(key, parts[1] if len(parts) == 2 else "")
    return found


def _decode_value(key: str, value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise TusHeaderError(f"Upload-Metadata: the value of {key!r} is not base64 of UTF-8 text") from None


def encode_metadata(values: dict[str, str]) -> str:
    """The Upload-Metadata header of ``values`` (what a client sends)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in values.items())


def check_patch(offset: int, held: int, length: int, body_length: int | None) -> str | None:
    """Why a PATCH of ``body_length`` bytes (None: chunked) at ``offset`` cannot go on an
    upload of ``length`` bytes of which ``held`` are stored; None if it can."""
    if offset != held:
        return f"Upload-Offset {offset} is not the upload's offset {held} (ask HEAD where to go on)"
    if body_length is not None and offset + body_length > length:
        return f"{body_length} bytes at offset {offset} go past the upload's length {length}"
    return None


def http_date(when: datetime) -> str:
    """An RFC 7231 date (Upload-Expires): ``Wed, 25 Jun 2026 16:00:00 GMT``."""
    return format_datetime(when, usegmt=True)

"""Coordinator -> agent: an image downloaded from a URL into staging, to become a template
(contract 6.5, POST /templates/from-url). POST /v1/downloads starts the download, keyed by
the upload it is for (its staged file is named as that upload's); GET
/v1/downloads/{upload_id} follows it (bytes received, of how many); POST
/v1/downloads/{upload_id}/cancel stops it and removes the partial file.

The URL's shape is checked on both sides (``DownloadUrl``); which hosts an agent will reach
is the agent's own setting (download_hosts, agent/download_policy.py)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from msgspec import Meta

from shared.error_slugs import ErrorSlug
from shared.messages.uploads import Staged
from shared.validation import CheckedStr, Model

URL_MAX = 2000
FORMATS = ("qcow2", "raw", "vmdk")
DownloadFormat = Literal["qcow2", "raw", "vmdk"]


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a download's address, or None: https only, a host, no
    user name or password (a secret in a URL ends up in logs), no fragment, no control
    characters or spaces, at most URL_MAX characters."""
    if len(url) > URL_MAX:
        return f"must be at most {URL_MAX} characters (got {len(url)})"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() != "https":
        return f"must be an https:// URL (got {parts.scheme + ':' if parts.scheme else 'no scheme'})"
    if not parts.hostname:
        return "has no host name"
    if "@" in parts.netloc:
        return "must not carry a user name or password"
    if parts.fragment or url.endswith("#"):
        return "must not have a #fragment"
    return None


class DownloadUrl(CheckedStr):
    """An https URL an agent may be asked to download (its host is the agent's to allow)."""

    field: ClassVar[str] = "url"
    json_schema = {"type": "string", "format": "uri", "pattern": "^https://", "maxLength": URL_MAX}

    @classmethod
    def check(cls, text: str) -> str:
        problem = url_problem(text)
        if problem is not None:
            raise ValueError(f"{cls.field} {problem}")
        return text


class _Hex(CheckedStr):
    length: ClassVar[int]

    @classmethod
    def check(cls, text: str) -> str:
        if not re.fullmatch(rf"[0-9a-fA-F]{{{cls.length}}}", text):
            raise ValueError(f"{cls.field} must be {cls.length} hex digits")
        return text.lower()


class Sha256Hex(_Hex):
    field: ClassVar[str] = "sha256"
    length: ClassVar[int] = 64
    json_schema = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}


class Sha512Hex(_Hex):
    field: ClassVar[str] = "sha512"
    length: ClassVar[int] = 128
    json_schema = {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"}


class DownloadRequest(Model, kw_only=True):
    """Download ``url`` for upload ``upload_id``, check it against exactly one of ``sha256``
    and ``sha512``, and stage it as an upload of ``format`` within the upload's limits."""

    upload_id: Annotated[int, Meta(ge=1)]
    url: DownloadUrl
    sha256: Sha256Hex | None = None
    sha512: Sha512Hex | None = None
    format: DownloadFormat
    max_bytes: Annotated[int, Meta(ge=1)]
    max_virtual_size: Annotated[int, Meta(ge=1)]
    label: Annotated[str, Meta(pattern="^[A-Za-z0-9._+-]{1,200}\\Z")] = "the image"

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.sha512 is None):
            raise ValueError("give exactly one of sha256 and sha512")


DownloadState = Literal["running", "done", "failed"]


class DownloadView(Model):
    """How far a download is: bytes received (``expected``: the server's length, 0 while
    unknown), tries made. A failed one says why (``status``: the HTTP status the coordinator
    answers with); a done one, what was staged."""

    upload_id: int
    state: DownloadState
    phase: str
    received: int
    expected: int
    attempts: int
    staged: Staged | None = None
    error: str | None = None
    error_slug: ErrorSlug | None = None
    status: int | None = None

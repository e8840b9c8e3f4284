"""Text fields that end up on a node's command line (pvesh runs as root) or in a VM's config.

A NUL cannot pass through exec at all ("embedded null byte"), and other control characters
(C0, DEL, C1) have no business in a name or option: each is refused when it arrives, with
the field named, rather than failing an import later. A description may keep its lines and
tabs (PVE stores it as comment lines).
"""

from __future__ import annotations

import re
from typing import ClassVar

from shared.pve_formats import FormatError
from shared.pve_schema import check_format
from shared.validation import CheckedStr

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
DESCRIPTION_MAX = 4096


def refuse_control(field: str, text: str, allowed: str = "") -> str:
    """``text`` unchanged, or ValueError naming ``field`` and the first control character."""
    for found in _CONTROL.finditer(text):
        if found.group() not in allowed:
            raise ValueError(
                f"{field} must not contain control characters"
                f" (U+{ord(found.group()):04X} at position {found.start()})"
            )
    return text


class Description(CheckedStr):
    """A description: at most 4096 characters; newlines (CRLF becomes LF) and tabs allowed."""

    field: ClassVar[str] = "description"
    json_schema = {"type": "string", "maxLength": DESCRIPTION_MAX}

    @classmethod
    def check(cls, text: str) -> str:
        text = text.replace("\r\n", "\n")
        if len(text) > DESCRIPTION_MAX:
            raise ValueError(f"{cls.field} must be at most {DESCRIPTION_MAX} characters (got {len(text)})")
        return refuse_control(cls.field, text, allowed="\n\t")


class VmName(CheckedStr):
    """A PVE VM name (format dns-name)."""

    field: ClassVar[str] = "name"
    json_schema = {"type": "string", "format": "hostname"}

    @classmethod
    def check(cls, text: str) -> str:
        refuse_control(cls.field, text)
        try:
            check_format("dns-name", text, cls.field)
        except FormatError as exc:
            raise ValueError(f"{cls.field} {str(exc).strip()} (got {text!r})") from None
        return text


class StorageId(CheckedStr):
    """A PVE storage id (format pve-storage-id, matched whole)."""

    field: ClassVar[str] = "storage"
    json_schema = {"type": "string", "pattern": "^[a-zA-Z][a-zA-Z0-9._-]*[a-zA-Z0-9]$"}

    @classmethod
    def check(cls, text: str) -> str:
        try:
            check_format("pve-storage-id", text, cls.field)
        except FormatError:
            raise ValueError(f"{cls.field} is not a PVE storage id (got {text!r})") from None
        return text

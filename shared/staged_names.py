"""The names of staged images: chosen by the agent, checked wherever one is asked for.

``upload-<id>-<random>.<fmt>`` for uploads, ``sync-...`` for copies received from peers; a
client's file name never becomes a path.
"""

from __future__ import annotations

import re

from shared.validation import CheckedStr

# fullmatch only: "$" would also match before a trailing newline.
STAGED_NAME = re.compile(r"(upload|sync)-([0-9]+)-[0-9a-f]{8}\.(qcow2|raw|vmdk)")


class StagedName(CheckedStr):
    field = "staged_name"

    @classmethod
    def check(cls, text: str) -> str:
        if not STAGED_NAME.fullmatch(text):
            raise ValueError(f"staged_name is not a staged image name (got {text!r})")
        return text

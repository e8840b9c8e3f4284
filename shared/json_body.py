"""Decoding an untrusted JSON request body within bounds.

Python's decoder has limits of its own that surface as the wrong errors: a body nested
~1000 levels deep raises RecursionError, a number of more than 4300 digits ValueError.
Here every limit is ours, checked while decoding, and reported as what it is, with the
place in the body (``where``, e.g. ``target_node_ids[2]``) when there is one.
"""

from __future__ import annotations

import json
import math
from typing import Any

from shared.errors import PvesphereError

MAX_DEPTH = 32
# A number longer than this is no id, count or size (2^53 has 16 digits): it is not converted.
MAX_NUMBER_CHARS = 64


class BadJson(PvesphereError, ValueError):
    """The body is not JSON, or not JSON this service reads; ``where`` is the place in it."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


class _BadNumber:
    """Stands in for a number refused while decoding, until its place in the body is known."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _number(convert: type[int] | type[float]) -> Any:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            return _BadNumber(f"number too long: {len(text)} characters (at most {MAX_NUMBER_CHARS})")
        value = convert(text)
        if not math.isfinite(value):
            return _BadNumber(f"number out of range: {text}")
        return value

    return parse


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON value")


def _check(value: Any) -> None:
    """Depth and refused numbers, walked without recursion (the value may nest ~1000 deep)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, _BadNumber):
            raise BadJson(item.reason, where.lstrip("."))
        if isinstance(item, dict):
            children = [(child, f"{where}.{key}") for key, child in item.items()]
        elif isinstance(item, list):
            children = [(child, f"{where}[{i}]") for i, child in enumerate(item)]
        else:
            continue
        if depth == MAX_DEPTH:
            raise BadJson(f"request body nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, place, depth + 1) for child, place in children)


def decode(raw: bytes) -> Any:
    """``raw`` (UTF-8 JSON) as Python values, or BadJson naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJson(f"request body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_int=_number(int), parse_float=_number(float), parse_constant=_constant)
    except RecursionError:
        raise BadJson(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"request body is not valid JSON: {exc}") from None
    _check(value)
    return value

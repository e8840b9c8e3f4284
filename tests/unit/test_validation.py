"""Input parsing: every bad field is named at once, in the API's words."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from msgspec import Meta

from shared.validation import Checked, Input, InvalidInput, parse


class Host(str, Checked):
    @classmethod
    def parse(cls, raw: Any) -> Host:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError("host must be a non-empty string")
        return cls(raw.strip().lower())


class Hop(Input):
    task_id: Annotated[int, Meta(ge=1)]


class Request(Input):
    host: Host
    page: Annotated[int, Meta(ge=1)] = 1
    state: Literal["pending", "failed"] | None = None
    hops: list[Hop] = []


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(Request, {"page": "0", "state": "lost", "colour": "blue", "hops": [{"task_id": 0}]})
    assert caught.value.fields == {
        "colour": "is not a known parameter",
        "host": "is required",
        "page": "must be >= 1 (got '0')",
        "state": "must be one of 'pending', 'failed' (got 'lost')",
        "hops[0].task_id": "must be >= 1",
    }
    assert str(caught.value).startswith("colour is not a known parameter; host is required; ")


def test_a_checked_field_says_its_own_message_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(Request, {"host": " "})
    assert caught.value.fields == {"host": "host must be a non-empty string"}
    assert str(caught.value) == "host must be a non-empty string"


def test_strings_from_a_query_are_converted_and_checked_values_are_plain_builtins() -> None:
    parsed = parse(Request, {"host": " PVE1 ", "page": "3", "state": "failed"})
    assert (parsed.host, parsed.page, parsed.state) == ("pve1", 3, "failed")
    # Database drivers bind exact types: sqlite3 refuses a str subclass.
    assert type(parsed.host) is str


def test_not_an_object() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(Request, [1, 2])
    assert caught.value.fields == {"": "must be a JSON object"}

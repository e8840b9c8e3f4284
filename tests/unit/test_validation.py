"""Input parsing: every bad field is named at once, in the API's words."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from msgspec import Meta

from shared.validation import INT_MAX, Checked, Input, InvalidInput, parse


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


class Filters(Input):
    page: Annotated[int, Meta(ge=1)] = 1
    ids: list[int] = []
    name: str | None = None
    options: dict[str, str | int] = {}


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        # integers a 64-bit column overflows on (SQLite: OverflowError), from a query and a body
        ({"page": "9223372036854775808"}, "page", "must be between"),
        ({"page": 2**63}, "page", "must be between"),
        ({"ids": [1, -(2**53)]}, "ids[1]", "must be between"),
        ({"options": {"memory": 2**64}}, "options.memory", "must be between"),
        # beyond what msgspec converts from a string at all
        ({"page": "9" * 5000}, "page", "must be between"),
        ({"name": "a\x00b"}, "name", "control characters"),
        ({"name": "\x1b[31m"}, "name", "control characters"),
        ({"name": "\ud800"}, "name", "control characters"),
        ({"options": {"k\x07": "v"}}, "options", "key with control characters"),
    ],
)
def test_integers_and_text_are_bounded_whatever_the_field_type(data: dict, field: str, text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(Filters, data)
    assert text in caught.value.fields[field]
    assert len(str(caught.value)) < 200  # a 5000-digit value is not echoed back


def test_the_bound_itself_and_ordinary_text_pass() -> None:
    parsed = parse(Filters, {"page": str(INT_MAX), "ids": [-INT_MAX], "name": "two\tlines\r\nof text"})
    assert parsed.page == INT_MAX and parsed.ids == [-INT_MAX]

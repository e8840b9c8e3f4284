"""Text bound for a node's command line: control characters are refused, naming the field."""

from __future__ import annotations

import pytest

from shared.text_fields import Description, VmName
from shared.validation import Input, InvalidInput, parse


class Body(Input):
    description: Description = Description("")
    name: VmName | None = None


def fields_of(data: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        parse(Body, data)
    return caught.value.fields


def test_a_description_keeps_its_lines_and_tabs() -> None:
    assert (
        parse(Body, {"description": "Ubuntu\r\n\tLTS\nsecond line"}).description
        == "Ubuntu\n\tLTS\nsecond line"
    )


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("a\x00b", "U+0000 at position 1"),
        ("a\rb", "U+000D at position 1"),
        ("\x1b[31m", "U+001B at position 0"),
        ("x\x7f", "U+007F at position 1"),
        ("x\x9b", "U+009B at position 1"),
    ],
)
def test_a_description_refuses_other_control_characters(text: str, found: str) -> None:
    assert fields_of({"description": text}) == {
        "description": f"description must not contain control characters ({found})"
    }


def test_a_description_has_a_length_limit() -> None:
    assert fields_of({"description": "x" * 4097}) == {
        "description": "description must be at most 4096 characters (got 4097)"
    }


def test_a_vm_name_is_a_dns_name_without_control_characters() -> None:
    assert parse(Body, {"name": "ubuntu-22.04"}).name == "ubuntu-22.04"
    assert fields_of({"name": "vm\x00"}) == {
        "name": "name must not contain control characters (U+0000 at position 2)"
    }
    assert fields_of({"name": "two words"}) == {
        "name": "name value does not look like a valid DNS name (got 'two words')"
    }

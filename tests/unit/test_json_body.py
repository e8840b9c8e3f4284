"""Request bodies: JSON decoded within bounds, every refusal said as what it is."""

from __future__ import annotations

import pytest

from shared.json_body import MAX_DEPTH, BadJson, decode


@pytest.mark.parametrize(
    ("raw", "where", "text"),
    [
        # Python's decoder raised RecursionError for this (a 500)
        (b"[" * 10000 + b"]" * 10000, "", f"nests deeper than {MAX_DEPTH} levels"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, "", f"nests deeper than {MAX_DEPTH} levels"),
        # and ValueError (int-from-string limit) for this
        (b'{"ids": [1, ' + b"7" * 5000 + b"]}", "ids[1]", "number too long: 5000 characters"),
        (b'{"size": -1' + b"0" * 70 + b".5}", "size", "number too long"),
        (b'{"x": {"y": 1e999}}', "x.y", "number out of range"),
        (b'{"x": NaN}', "", "NaN is not a JSON value"),
        (b'{"x": "\xff"}', "", "not UTF-8"),
        (b'{"x": ', "", "not valid JSON"),
    ],
)
def test_refusals_name_the_place(raw: bytes, where: str, text: str) -> None:
    with pytest.raises(BadJson) as caught:
        decode(raw)
    assert caught.value.where == where
    assert text in caught.value.message


def test_within_bounds_decodes() -> None:
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert decode(nested) is not None
    assert decode(b'{"id": 9007199254740991, "r": 1.5, "t": "\\u00e9"}') == {
        "id": 9007199254740991,
        "r": 1.5,
        "t": "\u00e9",
    }

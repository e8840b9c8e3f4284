"""The tus headers a client sends, read (shared/tus.py): every one is hostile until checked."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from shared.tus import TusHeaderError, check_patch, encode_metadata, http_date, parse_metadata, read_number


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_metadata_pairs_are_decoded_and_a_key_alone_is_an_empty_value() -> None:
    raw = f"filename {_b64('centos 7.qcow2')}, template_name {_b64('centos7')},is_confidential"
    assert parse_metadata(raw) == {
        "filename": "centos 7.qcow2",
        "template_name": "centos7",
        "is_confidential": "",
    }


def test_metadata_is_what_a_client_encodes() -> None:
    values = {"filename": "ü.raw", "cluster_id": "1", "flag": ""}
    assert parse_metadata(encode_metadata(values)) == values


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_no_metadata_is_none(raw: str | None) -> None:
    assert parse_metadata(raw) == {}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("filename not*base64", "not base64"),
        (f"filename {_b64('a')} extra", "is not 'key base64value'"),
        (f"filename {_b64('a')},filename {_b64('b')}", "more than once"),
        (f"file\u00e9 {_b64('a')}", "not an ASCII name"),
        ("filename " + base64.b64encode(bytes([0xFF, 0xFE])).decode(), "UTF-8"),
        (",", "is not 'key base64value'"),
        ("k " + "A" * (70 << 10), "longer than"),
    ],
)
def test_malformed_metadata_is_refused_naming_what(raw: str, named: str) -> None:
    with pytest.raises(TusHeaderError, match="Upload-Metadata") as caught:
        parse_metadata(raw)
    assert named in str(caught.value)


@pytest.mark.parametrize("raw", ["0", "17", " 42 ", "9" * 19])
def test_numbers_are_ascii_digits(raw: str) -> None:
    assert read_number("Upload-Offset", raw) == int(raw)


@pytest.mark.parametrize("raw", [None, "", "-1", "+5", "1_000", "٥", "1e3", "0x10", "9" * 20])
def test_anything_else_is_refused_naming_the_header(raw: str | None) -> None:
    with pytest.raises(TusHeaderError, match="Upload-Length"):
        read_number("Upload-Length", raw)


def test_a_patch_must_start_where_the_upload_stands_and_end_within_its_length() -> None:
    assert check_patch(100, 100, 1000, 900) is None
    assert check_patch(100, 100, 1000, None) is None  # (chunked: the agent stops it at the length)
    wrong = check_patch(90, 100, 1000, 10)
    assert wrong is not None and "90" in wrong and "100" in wrong
    past = check_patch(100, 100, 1000, 901)
    assert past is not None and "length 1000" in past


def test_upload_expires_is_an_http_date() -> None:
    assert http_date(datetime(2026, 6, 25, 16, 0, tzinfo=UTC)) == "Thu, 25 Jun 2026 16:00:00 GMT"

"""What an answer to a resumed download means (agent/download_resume.py): a 206 from the
byte asked for, with the same validator, continues; a 200 starts over with its body; a 206
from elsewhere or of a changed file is dropped and the whole file asked for again."""

from __future__ import annotations

import pytest

from agent.download_resume import (
    BACKOFF_CAP,
    Resume,
    Validator,
    decide,
    range_headers,
    resume_delay,
    total_of,
)

V1 = Validator(etag='"v1"', last_modified="Tue, 01 Dec 2026 10:00:00 GMT")
V2 = Validator(etag='"v2"', last_modified="Tue, 01 Dec 2026 11:00:00 GMT")
DATED = Validator(last_modified="Tue, 01 Dec 2026 10:00:00 GMT")


def test_a_resume_asks_for_the_rest_if_the_file_is_still_the_same() -> None:
    assert range_headers(0, V1) == {}
    assert range_headers(1000, V1) == {"Range": "bytes=1000-", "If-Range": '"v1"'}
    assert range_headers(1000, DATED) == {"Range": "bytes=1000-", "If-Range": DATED.last_modified}
    # If-Range takes no weak ETag: the date then
    weak = Validator(etag='W/"v1"', last_modified="Tue, 01 Dec 2026 10:00:00 GMT")
    assert range_headers(5, weak)["If-Range"] == weak.last_modified
    assert range_headers(5, Validator()) == {"Range": "bytes=5-"}


def test_a_206_from_the_offset_of_the_same_file_continues() -> None:
    assert decide(1000, 206, "bytes 1000-4999/5000", V1, V1) is Resume.CONTINUE
    assert decide(1000, 206, "bytes 1000-4999/*", DATED, DATED) is Resume.CONTINUE


def test_a_200_starts_over_with_its_body() -> None:
    assert decide(1000, 200, None, V1, V1) is Resume.RESTART
    assert decide(1000, 200, None, V1, V2) is Resume.RESTART


@pytest.mark.parametrize(
    ("content_range", "before", "now"),
    [
        ("bytes 0-4999/5000", V1, V1),  # not from the offset
        ("bytes 1001-4999/5000", V1, V1),
        ("garbage", V1, V1),
        (None, V1, V1),
        ("bytes 1000-4999/5000", V1, V2),  # another file now
        ("bytes 1000-4999/5000", DATED, Validator(last_modified="Wed, 02 Dec 2026 10:00:00 GMT")),
    ],
)
def test_a_206_from_elsewhere_or_of_a_changed_file_is_dropped(
    content_range: str | None, before: Validator, now: Validator
) -> None:
    assert decide(1000, 206, content_range, before, now) is Resume.REFETCH


def test_the_files_size_comes_from_the_content_range_or_the_length() -> None:
    assert total_of(200, None, 5000, 0) == 5000
    assert total_of(200, None, None, 0) is None
    assert total_of(206, "bytes 1000-4999/5000", 4000, 1000) == 5000
    assert total_of(206, "bytes 1000-4999/*", 4000, 1000) == 5000


def test_resumes_back_off_up_to_a_cap() -> None:
    delays = [resume_delay(n) for n in range(1, 8)]
    assert delays[:3] == [1.0, 2.0, 4.0]
    assert max(delays) == BACKOFF_CAP

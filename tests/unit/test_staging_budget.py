"""The staging budget: how it is written, and which staged copies an agent evicts first."""

from __future__ import annotations

import pytest

from agent.staging_budget import (
    BadBudget,
    Budget,
    StagedCopy,
    bytes_to_free,
    eviction_order,
    parse_budget,
)

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "limit_of_100_gib"),
    [
        ("20%", 20 * GIB),
        (" 12.5 % ", int(12.5 * GIB)),
        ("100%", 100 * GIB),
        ("50G", 50 * GIB),
        ("50GiB", 50 * GIB),
        ("512m", 512 << 20),
        ("1T", 1 << 40),
        ("1073741824", GIB),
        ("0", 0),
    ],
)
def test_a_budget_is_a_share_of_the_filesystem_or_a_size(text: str, limit_of_100_gib: int) -> None:
    assert parse_budget(text).limit(100 * GIB) == limit_of_100_gib


@pytest.mark.parametrize("text", ["", "0%", "101%", "-5G", "5X", "lots", "20%%", "1.5G"])
def test_a_bad_budget_is_refused_saying_what_is_expected(text: str) -> None:
    with pytest.raises(BadBudget, match="staging_budget"):
        parse_budget(text)


def test_a_share_follows_the_filesystem_a_size_does_not() -> None:
    assert Budget(share=0.5).limit(10) == 5
    assert Budget(bytes=7).limit(10) == 7


def copy(name: str, size: int, last_used: float) -> StagedCopy:
    return StagedCopy(name, size, last_used)


def test_least_recently_used_copies_go_first_and_copies_in_use_never() -> None:
    copies = [
        copy("sync-3-a.raw", 10, 300.0),
        copy("upload-1-b.raw", 10, 100.0),
        copy("sync-2-c.raw", 10, 200.0),
    ]
    order = eviction_order(copies, in_use={"upload-1-b.raw"})
    assert [c.name for c in order] == ["sync-2-c.raw", "sync-3-a.raw"]


def test_within_budget_and_with_room_on_disk_nothing_goes() -> None:
    assert bytes_to_free(used=40, budget=100, free=500, need=60, reserve=10, evictable=40) == 0


def test_a_new_image_past_the_budget_evicts_what_it_exceeds_by() -> None:
    assert bytes_to_free(used=80, budget=100, free=500, need=50, reserve=10, evictable=80) == 30


def test_over_budget_with_nothing_coming_evicts_back_down_to_it() -> None:
    assert bytes_to_free(used=130, budget=100, free=500, need=0, reserve=0, evictable=130) == 30


def test_a_full_disk_evicts_what_the_image_lacks_even_within_budget() -> None:
    # The budget is larger than the disk can give: the disk decides.
    assert bytes_to_free(used=40, budget=1000, free=30, need=50, reserve=10, evictable=40) == 30


def test_copies_are_not_evicted_for_an_image_that_would_not_fit_anyway() -> None:
    # Evicting every copy would still leave too little room: the image is refused, copies stay.
    assert bytes_to_free(used=40, budget=1000, free=10, need=100, reserve=10, evictable=40) == 0

from __future__ import annotations

from shared.backoff import exponential


def test_doubles_from_the_first_delay_up_to_the_cap() -> None:
    assert [exponential(n, 5.0, 60.0) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_no_failure_yet_waits_the_first_delay() -> None:
    assert exponential(0, 2.0, 60.0) == 2.0


def test_a_streak_of_days_stays_at_the_cap() -> None:
    # 2**1500 does not fit a float: the old formula raised OverflowError here
    assert exponential(1500, 5.0, 60.0) == 60.0
    assert exponential(10**9, 0.5, 300.0) == 300.0

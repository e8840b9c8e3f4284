"""The engine's verdict after an unexpected error: try again later, or give up saying why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.jobs.limits import ErrorLimits, after_error, describe, span

LIMITS = ErrorLimits(max_errors=5, deadline=1800.0, retry_first=10.0, retry_max=300.0)
T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
LAST = "KeyError: 'x'"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_errors_below_the_limit_are_tried_again_with_a_doubling_wait() -> None:
    verdicts = [after_error(LIMITS, n, T0, at(n * 10), LAST) for n in range(1, 5)]
    assert [v.give_up for v in verdicts] == [None] * 4
    assert [v.retry_in for v in verdicts] == [10, 20, 40, 80]


def test_the_last_allowed_error_gives_up_naming_count_span_and_error() -> None:
    verdict = after_error(LIMITS, 5, T0, at(12 * 60), LAST)
    assert verdict.give_up == "gave up after 5 unexpected errors over 12 min; last: KeyError: 'x'"


def test_the_deadline_gives_up_before_the_count_does() -> None:
    slow = after_error(LIMITS, 2, T0, at(1800), LAST)
    assert slow.give_up == (
        "gave up after 2 unexpected errors over 30 min (deadline 30 min); last: KeyError: 'x'"
    )
    assert after_error(LIMITS, 2, T0, at(1799), LAST).give_up is None


def test_one_error_past_a_short_deadline_says_so_in_the_singular() -> None:
    limits = ErrorLimits(max_errors=5, deadline=30.0)
    verdict = after_error(limits, 1, T0, at(45), LAST)
    assert verdict.give_up == (
        "gave up after 1 unexpected error over 45 s (deadline 30 s); last: KeyError: 'x'"
    )


def test_a_limit_of_one_gives_up_at_the_first_error() -> None:
    assert after_error(ErrorLimits(max_errors=1, deadline=60.0), 1, T0, T0, LAST).give_up is not None


def test_a_clock_that_went_back_counts_no_time() -> None:
    assert after_error(LIMITS, 1, T0, at(-5), LAST).give_up is None


def test_describe_names_the_class_and_the_first_line() -> None:
    assert describe(KeyError("data")) == "KeyError: 'data'"
    assert describe(ValueError("bad\nmore detail")) == "ValueError: bad"
    assert describe(RuntimeError()) == "RuntimeError"
    assert len(describe(ValueError("x" * 1000))) == 300


def test_span_reads_at_a_glance() -> None:
    assert [span(s) for s in (0, 119, 120, 720, 7199, 7200, 5 * 3600)] == [
        "0 s",
        "119 s",
        "2 min",
        "12 min",
        "120 min",
        "2.0 h",
        "5.0 h",
    ]

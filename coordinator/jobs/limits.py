"""When the job engine stops retrying a job whose handler keeps raising unexpectedly.

An unexpected error is a bug or an answer the coordinator cannot read (a database outage is
not one: the engine waits it out without counting it). Such a job is tried again after a
backoff, until ``max_errors`` unexpected errors in a row or ``deadline`` seconds since the
first of them; then it fails with the reason, as its kind's other failures do. Before, it
was postponed 10 s and tried again forever, and nobody saw why it did not move.

Pure: the engine (coordinator/jobs/engine.py) keeps the count and the first error's time on
the job's row (they survive a restart and are the same on every replica) and asks here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.backoff import exponential


@dataclass(frozen=True)
class ErrorLimits:
    """A job kind's limits (coordinator settings <kind>_max_errors, <kind>_error_deadline)."""

    max_errors: int
    deadline: float  # seconds from the first unexpected error of the streak
    retry_first: float = 10.0  # seconds before the first retry; doubling from there
    retry_max: float = 300.0


@dataclass(frozen=True)
class Verdict:
    retry_in: float  # seconds until the next try (when not giving up)
    give_up: str | None = None  # the job's failure reason, or None: try again


def describe(error: BaseException) -> str:
    """'KeyError: 'data'': the class and the first line of the message, briefly."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{error.__class__.__name__}: {text}"[:300] if text else error.__class__.__name__


def span(seconds: float) -> str:
    """'40 s', '12 min', '3 h': how long a streak lasted, in words a user reads at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def after_error(limits: ErrorLimits, errors: int, first_at: datetime, now: datetime, last: str) -> Verdict:
    """What to do after an unexpected error. ``errors``: those in a row, this one included;
    ``first_at``: when the first of them happened; ``last``: this one, described."""
    elapsed = max((now - first_at).total_seconds(), 0.0)
    times = "1 unexpected error" if errors == 1 else f"{errors} unexpected errors"
    if errors >= limits.max_errors:
        return Verdict(0.0, f"gave up after {times} over {span(elapsed)}; last: {last}")
    if elapsed >= limits.deadline:
        return Verdict(
            0.0,
            f"gave up after {times} over {span(elapsed)} (deadline {span(limits.deadline)}); last: {last}",
        )
    return Verdict(exponential(errors, limits.retry_first, limits.retry_max))

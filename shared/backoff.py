"""The one exponential backoff of every retry here: ``first``, twice that, four times, ... up
to ``cap``. Pure; each caller declares its own numbers beside the reason for them."""

from __future__ import annotations

# 2**64 times any first delay is past every cap; a larger exponent overflowed a float
# (a cascade delete asked every 60 s for 17 hours reached 2**1024 and raised OverflowError).
_MAX_DOUBLINGS = 64


def exponential(failures: int, first: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row (``first`` after one, and after
    none), never more than ``cap``."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    return float(min(first * 2**doublings, cap))

"""Whether a failed PVE call is worth trying again, and how long to wait before it.

A PVE that does not answer (pveproxy or pmxcfs restarting, a node rebooting) comes back by
itself: an import retries while its deadline allows. A PVE that answers "no" (a bad
parameter, a bad image, a storage that does not exist, a full storage) says the same
the next time: the import fails at once. Only the first kind is transient.

Pure logic (no I/O): ``transient_reason`` classifies, ``Retries`` keeps count and says
when to try again and what to report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from shared.backoff import exponential

# pveproxy's own answers when the daemon behind it is away: 502/503/504 from a proxy,
# 595 "Connection refused/timed out" and 596 "Broken pipe"/"Connection reset" (PVE's
# HTTP client codes for a node it could not reach), 599 for an aborted connection.
TRANSIENT_STATUSES = {
    502: "HTTP 502",
    503: "HTTP 503",
    504: "HTTP 504",
    595: "HTTP 595",
    596: "HTTP 596",
    599: "HTTP 599",
}
# What a PVE that does not answer says, in the words of pvesh (ipcc_send_rec: pmxcfs is not
# there), Python's sockets and requests, and a PVE task whose worker died with its daemon.
_TRANSIENT_TEXT: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"connection refused", re.I), "connection refused"),
    (
        re.compile(r"connection reset|broken pipe|remote end closed|connection aborted", re.I),
        "connection lost",
    ),
    (re.compile(r"timed out|did not answer within|got timeout", re.I), "timed out"),
    (re.compile(r"ipcc_send_rec", re.I), "cluster filesystem unreachable"),
    (re.compile(r"no quorum|cluster not ready", re.I), "no quorum"),
    (re.compile(r"\Aunexpected status\Z"), "its task died"),
]
# A full storage answers the same until someone frees space: never transient.
NO_SPACE = re.compile(r"no space left on device|not enough space|out of space|insufficient space", re.I)

BACKOFF_FIRST = 1.0
# At most this long between tries: once PVE is back, an import resumes within it.
BACKOFF_MAX = 5.0
# A try needs about this long (a few pvesh calls): none is started closer to the deadline.
TRY_SECONDS = 1.0


def transient_reason(status: int | None, text: str) -> str | None:
    """Why this failure will likely pass (a few words for a message), or None if it will not.

    ``status``: the HTTP status PVE answered (pvesh fakes 500 for every failure of its own),
    None when no answer came at all; ``text``: the error as PVE or the client library put it.
    A 4xx is PVE judging the request: permanent, whatever the text says.
    """
    if NO_SPACE.search(text):
        return None
    if status is not None and 400 <= status < 500:
        return None
    if status in TRANSIENT_STATUSES:
        return TRANSIENT_STATUSES[status]
    for pattern, reason in _TRANSIENT_TEXT:
        if pattern.search(text.strip()):
            return reason
    return None


def backoff(tries: int) -> float:
    """Seconds to wait after ``tries`` failed tries in a row (1, 2, 4, then 5 s each)."""
    return exponential(tries, BACKOFF_FIRST, BACKOFF_MAX)


class Retries:
    """The transient failures of one job so far: when to try again, and what to say."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.count = 0
        self.first_at: float | None = None
        self.reasons: list[str] = []  # distinct, in order of first appearance
        self.last_error = ""

    def failed(self, reason: str, error: str, remaining: float) -> float | None:
        """Record a transient failure; the seconds to wait before trying again (the backoff,
        shortened so that a last try still fits before the deadline), or None when the job's
        ``remaining`` time leaves no room for another try."""
        now = self._clock()
        if self.first_at is None:
            self.first_at = now
        self.count += 1
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.last_error = error
        delay = min(backoff(self.count), remaining - TRY_SECONDS)
        return delay if delay > 0 else None

    def summary(self) -> str:
        """'PVE did not answer (connection refused) 4 times over 12 s; last: ...'."""
        span = 0.0 if self.first_at is None else self._clock() - self.first_at
        times = "once" if self.count == 1 else f"{self.count} times"
        return (
            f"PVE did not answer ({', '.join(self.reasons)}) {times} over {span:.0f} s; "
            f"last: {self.last_error}"
        )

"""A database that does not answer: told apart from other errors, and said once per outage.

A restart of MariaDB (or a lost connection, or SQLite busy past its timeout) is a condition
that passes: requests answer 503 naming the database, jobs keep their leases and carry on
once it answers (coordinator/jobs/engine.py), background loops wait. Seen before, with the
tests' own MariaDB stopped for 8 s: every request answered 500 with a traceback in the log
(each agent's heartbeat too, every 2 s), and each job loop logged one per poll; read in the
code: the inventory loop ended for good, and a lease keeper that met the outage took its
job's handler down in a way that left the job stuck until the coordinator restarted. Now
the outage is one WARNING line and its end one INFO line with how long it lasted.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import exc as sa

log = logging.getLogger(__name__)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be asked (down, restarting, the
    connection lost, every pooled connection busy), as opposed to a refusal of the statement
    itself (a constraint, a bad query)."""
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return True
    # OperationalError: cannot connect, connection lost, server shutting down, lock wait
    # timeout, SQLite "database is locked"; InterfaceError: the connection is closed.
    return isinstance(error, sa.OperationalError | sa.InterfaceError | sa.TimeoutError)


def describe(error: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy appends the SQL and a link)."""
    cause = getattr(error, "orig", None) or error
    return f"{cause.__class__.__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"[:200]


class Outage:
    """The coordinator's one view of whether its database answers, for logging it once."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, doing: str, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "database unreachable (%s, while %s); requests answer 503 and jobs carry on once it answers",
                describe(error),
                doing,
            )

    def answered(self) -> None:
        if self.since is not None:
            log.info("database answers again, after %.1f s", time.monotonic() - self.since)
            self.since = None


OUTAGE = Outage()

"""Which database errors are an outage (503, jobs resume) rather than a refusal, and that an
outage is logged once."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import exc as sa

from coordinator.db.outage import Outage, describe, unreachable


class DriverError(Exception):
    pass


def test_a_lost_or_refused_connection_is_an_outage() -> None:
    refused = DriverError("(2003, \"Can't connect to MySQL server on '127.0.0.1'\")")
    assert unreachable(sa.OperationalError("SELECT 1", {}, refused))
    assert unreachable(sa.InterfaceError("SELECT 1", {}, DriverError("connection closed")))
    assert unreachable(sa.DBAPIError("SELECT 1", {}, DriverError("gone"), connection_invalidated=True))
    assert unreachable(sa.TimeoutError("QueuePool limit of size 10 overflow 10 reached"))


@pytest.mark.parametrize(
    "error",
    [
        sa.IntegrityError("INSERT", {}, DriverError("Duplicate entry")),
        sa.ProgrammingError("SELEC 1", {}, DriverError("syntax")),
        ValueError("not a database error"),
    ],
)
def test_a_refused_statement_is_not_an_outage(error: Exception) -> None:
    assert not unreachable(error)


def test_the_driver_s_first_line_is_what_is_told() -> None:
    error = sa.OperationalError("SELECT 1", {}, DriverError("(2003, 'refused')\nmore"))
    assert describe(error) == "DriverError: (2003, 'refused')"


def test_an_outage_is_logged_once_and_its_end_with_its_length(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage()
    error = sa.OperationalError("SELECT 1", {}, DriverError("refused"))
    with caplog.at_level(logging.INFO, logger="coordinator.db.outage"):
        outage.answered()  # no outage: nothing to say
        for _ in range(5):
            outage.failed("looking for due jobs", error)
        outage.answered()
        outage.answered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unreachable (DriverError: refused, while looking for due jobs)")
    assert lines[1].startswith("database answers again, after ")

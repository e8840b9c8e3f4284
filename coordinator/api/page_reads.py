"""A page of a list and its exact total in one statement (coordinator/db/fast_reads.py).

The total is a scalar subquery on every row of the page (evaluated once: uncorrelated), so
the two are one snapshot and one round trip; only a page past the last needs the count
alone. For lists that grow with the inventory (templates, clusters, nodes, storages,
agents), not with the history: every page is a short read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from coordinator.db.fast_reads import AnySelect, Query, Reads, Row

Scope = Callable[[AnySelect], AnySelect]


class CountedPage:
    """The rows of ``scope`` (joins and filters), ``newest`` first, each after the total."""

    def __init__(
        self, base: type[Any], columns: tuple[Any, ...], scope: Scope, newest: InstrumentedAttribute[int]
    ) -> None:
        count = scope(select(func.count()).select_from(base))
        total: ColumnElement[int] = count.correlate(None).scalar_subquery()
        rows = scope(select(total, *columns).select_from(base)).order_by(newest.desc())
        self.count = Query(count)
        self.rows = Query(rows.limit(bindparam("limit")).offset(bindparam("offset")))


async def read_page(
    reads: Reads, query: CountedPage, params: dict[str, Any], page: int, page_size: int
) -> tuple[int, list[Row]]:
    """The number of matching rows and one page of them (without the total column)."""
    paged = {**params, "limit": page_size, "offset": (page - 1) * page_size}
    (found,) = await reads.fetch((query.rows, paged))
    if found:
        return int(found[0][0]), [r[1:] for r in found]
    (totals,) = await reads.fetch((query.count, params))  # a page past the last: the real total
    return int(totals[0][0]), []

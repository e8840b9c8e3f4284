"""Pagination as section 1 of the contract says: page >= 1, page_size 1..100, newest first.

page is at most shared.validation.INT_MAX like every integer input, so the offset
(page - 1) * page_size stays inside a 64-bit integer; a page past the last answers an
empty list (with the real total), never an error.
"""

from __future__ import annotations

import builtins
from typing import Annotated, Any, Generic, TypeVar

from msgspec import Meta
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.validation import Input, Model


class PageQuery(Input):
    page: Annotated[
        int, Meta(ge=1, description="1-based page number; a page past the last is an empty list")
    ] = 1
    page_size: Annotated[int, Meta(ge=1, le=100, description="items per page, 1..100")] = 10


T = TypeVar("T")


class Page(Model, Generic[T]):
    total: int
    page: int
    page_size: int
    list: builtins.list[T]  # the contract's name; the builtin is reached through its module


async def paginate(session: AsyncSession, stmt: Select[Any], q: PageQuery) -> tuple[int, list[Any]]:
    """Total count of ``stmt`` and the rows of the requested page (``stmt`` brings the order)."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    return int(total or 0), await page_rows(session, stmt, q)


async def page_rows(session: AsyncSession, stmt: Select[Any], q: PageQuery) -> list[Any]:
    """The rows of the requested page (``stmt`` brings the order); for lists whose total is kept
    elsewhere (counting a table that grows with history costs as much as the table)."""
    return list((await session.execute(stmt.limit(q.page_size).offset((q.page - 1) * q.page_size))).all())

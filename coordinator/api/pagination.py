"""Pagination as section 1 of the contract says: page >= 1, page_size 1..100, newest first."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(1, ge=1, description="1-based page number")
    page_size: int = Field(10, ge=1, le=100, description="items per page, 1..100")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    total: int
    page: int
    page_size: int
    list: list[T]


async def paginate(session: AsyncSession, stmt: Select[Any], q: PageQuery) -> tuple[int, list[Any]]:
    """Total count of ``stmt`` and the rows of the requested page (``stmt`` brings the order)."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.execute(stmt.limit(q.page_size).offset((q.page - 1) * q.page_size))).all()
    return int(total or 0), list(rows)

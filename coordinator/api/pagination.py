"""Pagination as section 1 of the contract says: page >= 1, page_size 1..100, newest first.

page is at most shared.validation.INT_MAX like every integer input, so the offset
(page - 1) * page_size stays inside a 64-bit integer; a page past the last answers an
empty list (with the real total), never an error.
"""

from __future__ import annotations

import builtins
from typing import Annotated, Generic, TypeVar

from msgspec import Meta

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

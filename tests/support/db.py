"""Direct database access for tests: seeding rows and checking that nothing was left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.session import create_engine, session_factory

T = TypeVar("T")


def with_session(url: str, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())

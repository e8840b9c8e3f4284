"""The conditional UPDATE every status change is: the row moves only from a status the
entity's table lets go to the new one (and whatever else ``where`` asks: the attempt a
worker holds); the answer says how many rows moved."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.states import changes
from coordinator.states.transitions import Transitions


async def move(
    session: AsyncSession,
    model: Any,
    transitions: Transitions[Any],
    new: StrEnum,
    where: Iterable[ColumnElement[bool]],
    from_: Iterable[StrEnum] | None = None,
    **values: Any,
) -> int:
    """Rows matching ``where`` in one of ``from_`` (default: every status that may go to
    ``new``) become ``new`` with ``values``; how many did. ``from_`` must be allowed sources."""
    sources = transitions.sources(new)
    allowed = tuple(sources if from_ is None else from_)
    if not set(allowed) <= set(sources):
        raise ValueError(f"{model.__tablename__}: {sorted(allowed)} may not all go to {new}")
    where = list(where)
    # Said (logged, timed) once committed: coordinator/states/changes.py.
    about_to_move = await changes.rows_about_to_move(session, model, where, allowed, new, values)
    result = await session.execute(
        update(model)
        .where(*where, model.status.in_(allowed))
        .values(status=new, **values)
        .execution_options(synchronize_session=False)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    await changes.moved(session, model, about_to_move, count)
    return count

"""A template's states (vm_template.status) and every write of one.

::

    active   --soft delete-->                                  deleted
    active   --cascade delete asked (its job runs)-->          deleting
    deleting --every part removed-->                           deleted
    deleted  --cascade delete asked (removes what a soft delete left)--> deleting

While deleting, no new work starts on it and it stays visible (with its deletion). The
name is the template's ``name_key`` while it is not deleted: NULL from then on, so the
name is free again (the unique (cluster, name_key) key).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import VmTemplate
from coordinator.db.types import utcnow
from coordinator.states.transitions import Transitions
from coordinator.states.writes import move


class TemplateStatus(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"


# The API's name for the statuses it shows (tests/unit/test_states.py: the same values).
TemplateStatusName = Literal["active", "deleting", "deleted"]

S = TemplateStatus
VISIBLE = (S.ACTIVE, S.DELETING)
TRANSITIONS = Transitions[TemplateStatus](
    {
        S.ACTIVE: frozenset({S.DELETING, S.DELETED}),
        S.DELETING: frozenset({S.DELETED}),
        S.DELETED: frozenset({S.DELETING}),
    }
)


def new_template(template_name: str, **fields: Any) -> VmTemplate:
    """An active template holding its name; the caller adds it."""
    return VmTemplate(status=S.ACTIVE, template_name=template_name, name_key=template_name, **fields)


async def soft_delete(session: AsyncSession, template_id: int, actor: str) -> bool:
    """active -> deleted (hidden; nothing removed)."""
    moved = await move(
        session,
        VmTemplate,
        TRANSITIONS,
        S.DELETED,
        [VmTemplate.id == template_id],
        from_=(S.ACTIVE,),
        deleted_at=utcnow(),
        name_key=None,
        modifier=actor,
    )
    return moved == 1


async def start_deleting(session: AsyncSession, template_id: int, actor: str) -> bool:
    """active/deleted -> deleting; of concurrent requests exactly one does it."""
    moved = await move(
        session, VmTemplate, TRANSITIONS, S.DELETING, [VmTemplate.id == template_id], modifier=actor
    )
    return moved == 1


async def deleted(session: AsyncSession, template_id: int) -> bool:
    """deleting -> deleted: its cascade delete removed every part."""
    moved = await move(
        session,
        VmTemplate,
        TRANSITIONS,
        S.DELETED,
        [VmTemplate.id == template_id],
        from_=(S.DELETING,),
        name_key=None,
        deleted_at=func.coalesce(VmTemplate.deleted_at, utcnow()),
    )
    return moved == 1


async def version_available(session: AsyncSession, template_id: int, version: int) -> bool:
    """A newer version is available on its import node: it becomes current (an older one's
    import ending late, or a version made current by activate meanwhile, moves nothing back)."""
    result = await session.execute(
        update(VmTemplate)
        .where(VmTemplate.id == template_id, VmTemplate.current_version < version)
        .values(current_version=version)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def activate(session: AsyncSession, template_id: int, version: int, actor: str) -> bool:
    """``version`` becomes current (a roll back or forward); the caller checked it is imported."""
    result = await session.execute(
        update(VmTemplate)
        .where(VmTemplate.id == template_id, VmTemplate.status == S.ACTIVE)
        .values(current_version=version, modifier=actor, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]

"""Periodic clean-up of what failed work leaves behind on the agents.

A failed sync task keeps the bytes its target already verified, so that a retry resumes
instead of starting over. Nobody retries forever: after ``keep_failed_copies_hours`` the
partial copy is removed from the target's staging disk (a later retry then starts from
the first byte). Abandoned uploads are cleaned by ``uploads.expire_abandoned``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.db.models import TemplateSyncTask
from coordinator.db.types import utcnow

log = logging.getLogger(__name__)


async def remove_failed_copies(
    db: async_sessionmaker[AsyncSession], agents: AgentLinks, older_than: timedelta
) -> int:
    """Partial copies of tasks failed for longer than ``older_than``; returns how many went."""
    async with db() as session:
        tasks = list(
            await session.scalars(
                select(TemplateSyncTask).where(
                    TemplateSyncTask.status == "failed",
                    TemplateSyncTask.bytes_done > 0,
                    TemplateSyncTask.updated_at < utcnow() - older_than,
                )
            )
        )
    removed = 0
    for task in tasks:
        try:
            agent = await agents.for_node(task.target_node_id)
            await agent.remove_receive(task.id, task.uid)
        except (NoLiveAgent, AgentUnreachable, AgentError) as exc:
            log.info(
                "sync task %s: partial copy on %s not removed yet: %s", task.id, task.target_node_name, exc
            )
            continue
        async with db() as session:
            # Nothing is at the target any more: a retry starts from the first byte.
            await session.execute(
                update(TemplateSyncTask)
                .where(TemplateSyncTask.id == task.id, TemplateSyncTask.status == "failed")
                .values(bytes_done=0, progress=0)
            )
            await session.commit()
        removed += 1
        log.info("sync task %s: partial copy on %s removed (failed long ago)", task.id, task.target_node_name)
    return removed

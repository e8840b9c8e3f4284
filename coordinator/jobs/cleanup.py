"""Periodic clean-up of what failed work leaves behind on the agents.

A failed or canceled sync task keeps the bytes its target already verified, so that a
retry resumes instead of starting over. Nobody retries forever: after ``keep_failed_copies_hours`` the
partial copy is removed from the target's staging disk (a later retry then starts from
the first byte). Abandoned uploads are cleaned by ``uploads.expire_abandoned``.

Only the tasks whose target has a live agent are read, at most ``BATCH`` a run: the others
wait for their agent at no cost. Reading every failed task every run, and asking for each
one's agent (two queries a task), cost the coordinator its whole CPU at 1M tasks of
history (150k failed ones, every 30 s) and held its event loop for hundreds of ms at 100k
(benchmarks/api: p99 265 ms on a read route); now a run is three statements when no agent
is live.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks
from coordinator.agents.registry import live_agents
from coordinator.db.models import TemplateSyncTask
from coordinator.db.types import utcnow
from coordinator.states import sync_task

log = logging.getLogger(__name__)
# Failed tasks handled a run (every 30 s: coordinator/app.py JANITOR_INTERVAL).
BATCH = 500


async def remove_failed_copies(
    db: async_sessionmaker[AsyncSession], agents: AgentLinks, older_than: timedelta
) -> int:
    """Partial copies of tasks failed (or canceled) for longer than ``older_than``; returns how many went."""
    async with db() as session:
        live = await live_agents(session, agents.timeout)
        if not live:
            return 0
        tasks = list(
            await session.scalars(
                select(TemplateSyncTask)
                .where(
                    TemplateSyncTask.status.in_(sync_task.RETRYABLE),
                    TemplateSyncTask.bytes_done > 0,
                    TemplateSyncTask.updated_at < utcnow() - older_than,
                    TemplateSyncTask.target_node_id.in_(list(live)),
                )
                .order_by(TemplateSyncTask.id)
                .limit(BATCH)
            )
        )
    removed = 0
    for task in tasks:
        try:
            await agents.client(live[task.target_node_id]).remove_receive(task.id, task.uid)
        except (AgentUnreachable, AgentError) as exc:
            log.info(
                "sync task %s: partial copy on %s not removed yet: %s", task.id, task.target_node_name, exc
            )
            continue
        async with db() as session:
            # Nothing is at the target any more: a retry starts from the first byte.
            await session.execute(
                update(TemplateSyncTask)
                .where(TemplateSyncTask.id == task.id, TemplateSyncTask.status.in_(sync_task.RETRYABLE))
                .values(bytes_done=0, progress=0)
            )
            await session.commit()
        removed += 1
        log.info("sync task %s: partial copy on %s removed (ended long ago)", task.id, task.target_node_name)
    return removed

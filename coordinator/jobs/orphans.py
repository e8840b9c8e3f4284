"""Files on the agents' staging disks that no upload or sync task needs any more.

Whoever ends an upload or removes a sync task also asks the agent to remove its files;
when that agent was down at the time (or the coordinator stopped first), they stay
behind. The janitor compares each live agent's staging with the database and removes
what belongs to nothing: files of uploads that are gone, failed or already imported
into shared storage, and copies of sync tasks that no longer exist. Only files older
than ``grace`` are judged, so nothing is taken from under a row not yet committed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent.client import AgentClient, AgentError, AgentUnreachable
from coordinator.agents.links import AgentLinks
from coordinator.agents.registry import live_agents
from coordinator.db.models import TemplateSyncTask, TemplateUpload

log = logging.getLogger(__name__)


def needs_staged_image(upload: TemplateUpload | None, node_id: int) -> bool:
    if upload is None or upload.import_node_id != node_id:
        return False
    if upload.status in ("uploading", "uploaded", "importing"):
        return True
    # Imported: a local-storage image stays as the source of syncs; a shared one is not needed.
    return upload.status == "imported" and bool(upload.staged_name)


async def remove_orphans(
    db: async_sessionmaker[AsyncSession], agents: AgentLinks, timeout: timedelta, grace: timedelta
) -> int:
    """Check every live agent's staging; returns how many uploads' files and copies went."""
    async with db() as session:
        live = await live_agents(session, timeout)
    removed = 0
    for node_id, agent in live.items():
        try:
            removed += await _check_agent(db, agents.client(agent), node_id, grace.total_seconds())
        except (AgentUnreachable, AgentError) as exc:
            log.info("staging of node %s not checked: %s", node_id, exc)
    return removed


async def _check_agent(
    db: async_sessionmaker[AsyncSession], agent: AgentClient, node_id: int, grace: float
) -> int:
    report = await agent.staging()
    upload_ids = [u.upload_id for u in report.uploads if u.age_seconds >= grace]
    receives = {r.task_uid: r.task_id for r in report.receives if r.age_seconds >= grace}
    async with db() as session:
        uploads = {
            u.id: u
            for u in await session.scalars(select(TemplateUpload).where(TemplateUpload.id.in_(upload_ids)))
        }
        known_tasks = set(
            await session.scalars(
                select(TemplateSyncTask.uid).where(TemplateSyncTask.uid.in_(list(receives)))
            )
        )
    removed = 0
    for upload_id in upload_ids:
        if not needs_staged_image(uploads.get(upload_id), node_id):
            gone = (await agent.delete_upload(upload_id)).removed
            log.info("staging of node %s: removed %s (upload %s needs it no more)", node_id, gone, upload_id)
            removed += 1
    for task_uid, task_id in receives.items():
        if task_uid not in known_tasks:
            await agent.remove_receive(task_id, task_uid)
            log.info(
                "staging of node %s: removed the copy of sync task %s (the task is gone)", node_id, task_id
            )
            removed += 1
    return removed

"""``keep_versions``: a template's versions older than its newest ``keep_versions`` imported
ones are removed, once no linked clone uses them (contract 6.1); and version deletes that
could not finish at once (an agent down) are finished.

A round every ``version_prune_interval`` seconds (30), or sooner when woken (a version became available,
one was activated or asked to be deleted). Which versions go is decided by
coordinator/version_plan.versions_to_prune; each goes through the one version delete
(coordinator/version_delete.py), whose refusals (a linked clone uses it, a task of it
runs) leave it for a later round. Safe with several replicas: a version's deletion starts
by a conditional status change (one replica wins) and each attempt holds the upload row's
lease; a replica that loses either does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator import version_delete
from coordinator.db.models import TemplateUpload, VmTemplate
from coordinator.db.outage import OUTAGE, unreachable
from coordinator.errors import Refusal
from coordinator.states.template import TemplateStatus
from coordinator.states.upload import LISTED
from coordinator.template_delete import DeleteJobs
from coordinator.version_plan import VersionFacts, versions_to_prune

log = logging.getLogger(__name__)


class VersionPruner:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        jobs: DeleteJobs,
        keep: int,
        in_pve: Callable[[int], Awaitable[set[int]]] | None,
        interval: float,
    ) -> None:
        self.db = db
        self.jobs = jobs
        self.keep = keep
        self.in_pve = in_pve
        self.interval = interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.prune_once()
            except Exception as exc:
                if unreachable(exc):
                    OUTAGE.failed("removing old versions", exc)
                else:
                    log.exception("version pruning failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def prune_once(self) -> list[tuple[int, int]]:
        """One round: unfinished version deletes attempted again, then the versions beyond
        keep_versions asked to be deleted; the (template, version) pairs deleted."""
        gone: list[tuple[int, int]] = []
        for upload_id in await version_delete.deleting_versions(self.db):
            outcome = await version_delete.attempt(self.db, self.jobs, upload_id)
            if outcome.done:
                gone.append((outcome.template_id, outcome.version))
        for template_id, current, facts in await self._over_keep():
            for version in versions_to_prune(facts, current, self.keep):
                try:
                    upload_id = await version_delete.start(self.db, template_id, version, self.in_pve)
                except Refusal as exc:
                    log.debug("template %s: version %s kept for now: %s", template_id, version, exc.message)
                    continue
                outcome = await version_delete.attempt(self.db, self.jobs, upload_id)
                log.info(
                    "template %s: version %s removed (keep_versions %d)", template_id, version, self.keep
                )
                if outcome.done:
                    gone.append((template_id, version))
        return gone

    async def _over_keep(self) -> list[tuple[int, int, list[VersionFacts]]]:
        """Active templates with more than keep_versions versions: (id, current, versions)."""
        async with self.db() as session:
            counted = (
                select(TemplateUpload.template_id)
                .where(TemplateUpload.template_id.is_not(None), TemplateUpload.status.in_(LISTED))
                .group_by(TemplateUpload.template_id)
                .having(func.count() > self.keep)
            )
            templates = (
                await session.execute(
                    select(VmTemplate.id, VmTemplate.current_version).where(
                        VmTemplate.id.in_(counted), VmTemplate.status == TemplateStatus.ACTIVE
                    )
                )
            ).all()
            found = []
            for template_id, current in templates:
                rows = await session.execute(
                    select(TemplateUpload.version, TemplateUpload.status).where(
                        TemplateUpload.template_id == template_id, TemplateUpload.status.in_(LISTED)
                    )
                )
                found.append((template_id, current, [VersionFacts(v, s) for v, s in rows.all()]))
        return found

"""The janitor gives up uploads cut off by a coordinator stop (their streaming lease expired):
each one on its own, so that one it cannot remove does not keep the others, or the rest of
the janitor's round, from being cleaned up."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from coordinator import uploads
from coordinator.appkeys import AGENTS, DB
from coordinator.db.models import TemplateUpload, VmTemplate
from tests.support.db import template_with_versions
from tests.support.inprocess import InProcess

EXPIRED = datetime.now(UTC) - timedelta(minutes=5)


@pytest.mark.mariadb
def test_an_upload_that_cannot_be_given_up_does_not_hold_back_the_others(coordinator: InProcess) -> None:
    async def seed() -> tuple[int, int, int]:
        async with coordinator.app[DB]() as session:
            # Its template is still pointed at by another version's row: removing it fails.
            stuck, (stuck_upload, _) = await template_with_versions(
                session, f"stuck-{secrets.token_hex(3)}", coordinator.cluster_id, 2
            )
            plain, (plain_upload,) = await template_with_versions(
                session, f"cut-off-{secrets.token_hex(3)}", coordinator.cluster_id
            )
            for row in (stuck_upload, plain_upload):
                row.lease_expires_at = EXPIRED
            await session.commit()
            return stuck_upload.id, plain_upload.id, plain.id

    stuck_id, plain_id, plain_template = coordinator.run(seed())
    # (the session-long coordinator's own janitor may come first: either way, the same)
    coordinator.run(uploads.expire_abandoned(coordinator.app[DB], coordinator.app[AGENTS]))

    async def read() -> tuple[str, str, str | None, VmTemplate | None]:
        async with coordinator.app[DB]() as session:
            stuck = await session.get(TemplateUpload, stuck_id)
            plain = await session.get(TemplateUpload, plain_id)
            assert stuck is not None and plain is not None
            template = await session.get(VmTemplate, plain_template)
            # (no longer expired: the janitor of this session-long coordinator leaves it be)
            await session.execute(
                update(TemplateUpload).where(TemplateUpload.id == stuck_id).values(lease_expires_at=None)
            )
            await session.commit()
            return stuck.status, plain.status, plain.error_message, template

    stuck_status, plain_status, reason, template = coordinator.run(read())
    assert stuck_status == "uploading"  # left as it was, its transaction rolled back
    assert plain_status == "failed" and reason is not None and "coordinator stopped" in reason
    assert template is None  # a first upload given up takes its template row with it

"""GET /templates/{id}/instances?version=N: a version the template does not have (never
made, or deleted) is a 404 version_not_found, as resolve and activate answer it; a version
it has, with no instance yet, is an empty list."""

from __future__ import annotations

import secrets

import pytest

from coordinator.appkeys import DB
from tests.support.api import Api
from tests.support.db import template_with_versions
from tests.support.inprocess import InProcess


def _template_with_versions(coordinator: InProcess) -> int:
    """A template whose version 1 is uploading (no instance yet) and version 2 is deleted."""

    async def make() -> int:
        async with coordinator.app[DB]() as session:
            name = f"by-version-{secrets.token_hex(3)}"
            template, (uploading, deleted) = await template_with_versions(
                session, name, coordinator.cluster_id, 2
            )
            deleted.status = "deleted"
            # (no lease to expire: the janitor of this session-long coordinator leaves it be;
            # its template, which another version's row points at, could not be removed)
            uploading.lease_expires_at = None
            await session.commit()
            return template.id

    return coordinator.run(make())


@pytest.mark.mariadb
def test_instances_of_a_version_the_template_lacks_are_a_404(coordinator: InProcess, api: Api) -> None:
    template_id = _template_with_versions(coordinator)
    listed = api.get(f"/templates/{template_id}/instances?version=1").ok()
    assert (listed["total"], listed["instances"]) == (0, [])
    for version in (2, 9):
        reply = api.get(f"/templates/{template_id}/instances?version={version}")
        assert (reply.status, reply.error) == (404, "version_not_found"), reply.body
        assert f"{version} of template {template_id}" in reply.message
    assert api.get(f"/templates/{template_id}/instances").ok()["total"] == 0
    assert api.get("/templates/999999/instances?version=1").error == "template_not_found"

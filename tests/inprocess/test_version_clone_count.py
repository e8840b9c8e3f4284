"""GET /templates/{id}/versions counts in ``clones`` what a delete counts
(coordinator/clones_in_pve.py): a clone whose VM is gone from PVE is no longer one."""

from __future__ import annotations

import secrets

from coordinator.appkeys import DB
from coordinator.db.models import Clone
from tests.support.db import clone_row, template_with_versions
from tests.support.inprocess import InProcess


def _template_with_clones(coordinator: InProcess) -> int:
    """Version 1 with a clone being made and a completed one whose VM 4242 PVE does not hold
    (the emulator has no such VM: an administrator destroyed it)."""

    async def make() -> int:
        async with coordinator.app[DB]() as session:
            name = f"counted-{secrets.token_hex(3)}"
            template, (upload,) = await template_with_versions(session, name, coordinator.cluster_id)
            being_made, destroyed = clone_row(upload, "c1", vmid=4241), clone_row(upload, "c2", vmid=4242)
            session.add_all([being_made, destroyed])
            await session.flush()
            await session.execute(
                Clone.__table__.update().where(Clone.id == destroyed.id).values(status="completed")
            )
            await session.commit()
            return template.id

    return coordinator.run(make())


def test_a_clone_whose_vm_is_gone_from_pve_is_not_counted(coordinator_sqlite: InProcess) -> None:
    template_id = _template_with_clones(coordinator_sqlite)
    listed = coordinator_sqlite.api.get(f"/templates/{template_id}/versions").ok()["list"]
    assert [(v["version"], v["clones"]) for v in listed] == [(1, 1)]  # the one being made

"""GET /templates/{id}/versions counts in ``clones`` what a delete counts
(coordinator/clones_in_pve.py): a clone whose VM is gone from PVE is no longer one."""

from __future__ import annotations

import secrets

from coordinator.appkeys import DB
from coordinator.db.models import Clone
from coordinator.states import clone as clone_states
from coordinator.states.template import new_template
from tests.support.db import upload_row
from tests.support.inprocess import InProcess


def _template_with_clones(coordinator: InProcess) -> int:
    """Version 1 with a clone being made and a completed one whose VM 4242 PVE does not hold
    (the emulator has no such VM: an administrator destroyed it)."""

    async def make() -> int:
        async with coordinator.app[DB]() as session:
            template = new_template(f"counted-{secrets.token_hex(3)}", cluster_id=coordinator.cluster_id)
            session.add(template)
            await session.flush()
            upload = upload_row(template, version=1)
            session.add(upload)
            await session.flush()
            clones = [
                clone_states.new_clone(
                    waits_for_sync=False,
                    template_id=template.id,
                    version=1,
                    upload_id=upload.id,
                    cluster_id=coordinator.cluster_id,
                    node_id=1,
                    node_name="pve-node1",
                    source_node_id=1,
                    source_node_name="pve-node1",
                    storage_name="local",
                    name=f"c{n}",
                    vm_config="{}",
                    vmid=vmid,
                )
                for n, vmid in enumerate((4241, 4242))
            ]
            session.add_all(clones)
            await session.flush()
            await session.execute(
                Clone.__table__.update().where(Clone.id == clones[1].id).values(status="completed")
            )
            await session.commit()
            return template.id

    return coordinator.run(make())


def test_a_clone_whose_vm_is_gone_from_pve_is_not_counted(coordinator_sqlite: InProcess) -> None:
    template_id = _template_with_clones(coordinator_sqlite)
    listed = coordinator_sqlite.api.get(f"/templates/{template_id}/versions").ok()["list"]
    assert [(v["version"], v["clones"]) for v in listed] == [(1, 1)]  # the one being made

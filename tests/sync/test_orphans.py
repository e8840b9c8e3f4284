"""Staged files nothing needs any more are removed; files something needs are kept."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

import pytest

from coordinator.app import JANITOR_INTERVAL
from demo.stack import Stack
from shared.tickets import TicketSigner
from tests.support.api import Api
from tests.support.manifests import manifest_of
from tests.support.syncs import agent_get
from tests.support.uploads import detail, staging_dir, wait_for
from tests.sync.test_faults import local_template
from tests.sync.test_tickets_and_limits import Target

HOUR_AGO = time.time() - 3600


def _plant(folder: Path, name: str, old: bool = True) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(4096))
    if old:
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    return path


@pytest.mark.mariadb
def test_files_of_gone_uploads_and_tasks_are_removed_the_rest_kept(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    """What a cascade delete or an upload's end leaves when the agent was down at the time."""
    template_id, _ = local_template(api, stack, tmp_path, "keeps-its-image", 4)
    upload_id = detail(api, template_id)["upload_info"]["upload_id"]
    (needed,) = staging_dir(stack, "pve-node1").glob(f"upload-{upload_id}-*")
    os.utime(needed, (HOUR_AGO, HOUR_AGO))  # old, but the template's syncs still need it

    node2 = staging_dir(stack, "pve-node2")
    gone_upload = _plant(node2, "upload-987654-0badc0de.raw")
    gone_partial = _plant(node2, "upload-987655-0badc0de.qcow2.part")
    young = _plant(node2, "upload-987656-0badc0de.raw", old=False)  # its row may not be visible yet
    # A complete copy for a sync task the database no longer has (deleted while node 2 was down).
    task = 900_000 + secrets.randbelow(50_000)
    data = os.urandom(1 << 20)
    ticket = TicketSigner(stack.base / "ticket-signing.key").issue(
        task_id=task,
        task_uid=f"{task:032x}",
        epoch=1,
        node="pve-node2",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        manifest=manifest_of(data).digest(),
        fmt="raw",
    )
    target = Target(stack)
    opened = target.open(task, ticket, data=data).json()
    assert target.send(task, opened["session"], data).json()["state"] == "complete"
    copy = node2 / agent_get(stack, "pve-node2", f"/v1/receives/{task}").json()["staged_name"]
    for path in (copy, node2 / "receives" / f"{task:032x}.json"):
        os.utime(path, (HOUR_AGO, HOUR_AGO))

    try:
        assert stack.coordinator is not None
        stack.coordinator.stop()
        stack.start_coordinator()  # the janitor's first round runs at start

        wait_for(
            lambda: not gone_upload.exists() and not gone_partial.exists() and not copy.exists(),
            timeout=2 * JANITOR_INTERVAL + 30,  # the first round at start, or the next two
            what="the orphaned files removed",
        )
        assert agent_get(stack, "pve-node2", f"/v1/receives/{task}").status_code == 404
        assert young.exists() and needed.exists()
        assert detail(api, template_id)["upload_info"]["status"] == "imported"
    finally:
        young.unlink(missing_ok=True)
        target.drop(task)

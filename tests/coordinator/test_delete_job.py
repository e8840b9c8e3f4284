"""A cascade delete while a holding node's agent is down: 202, visibly `deleting`, and done
on its own once the agent is back, also across a coordinator restart."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateDeletion
from demo.stack import Stack
from tests.inprocess.test_openapi import _check, _doc
from tests.support import images
from tests.support.api import Api, Reply
from tests.support.db import with_session
from tests.support.syncs import wait_tasks
from tests.support.uploads import node_ids, rows_named, staged_files, storage_id, upload, vm_anywhere
from tests.sync.test_faults import restart_coordinator

GONE_WITHIN = 30.0  # seconds from the agent's return to the template's end (measured: see the report)
SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)


def _imported(api: Api, stack: Stack, tmp_path: Path, name: str, storage: int, **fields: Any) -> int:
    image = images.qcow2(tmp_path / f"{name}.qcow2", size_mib=16, data_mib=2)
    data = upload(api, stack, image, name, storage, wait=True, **fields).ok()
    assert data["status"] == "imported", data
    return int(data["template_id"])


def _accepted(reply: Reply) -> dict[str, Any]:
    assert reply.status == 202, reply.body
    assert reply.body["code"] == 202 and reply.body["message"] == "accepted", reply.body
    data: dict[str, Any] = reply.data
    assert data["status"] == "deleting", data
    return data


def _wait_gone(api: Api, template_id: int, timeout: float = GONE_WITHIN) -> float:
    """Seconds until the template is gone (404)."""
    start = time.monotonic()
    while True:
        reply = api.get(f"/templates/{template_id}")
        if reply.status == 404:
            return time.monotonic() - start
        assert reply.ok()["status"] == "deleting", reply.body
        assert time.monotonic() - start < timeout, f"still deleting after {timeout}s: {reply.body}"
        time.sleep(0.2)


def _deletions(stack: Stack, template_id: int) -> list[TemplateDeletion]:
    async def work(session: AsyncSession) -> list[TemplateDeletion]:
        rows = await session.scalars(
            select(TemplateDeletion).where(TemplateDeletion.template_id == template_id)
        )
        return list(rows)

    return with_session(stack.database_url, work)


@SQLITE_ONLY
def test_a_delete_waits_for_a_down_agent_visibly_and_finishes_when_it_is_back(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    name = f"node3-down-{secrets.token_hex(3)}"
    nodes = node_ids(api, stack)
    staged_before = staged_files(stack)
    template_id = _imported(
        api,
        stack,
        tmp_path,
        name,
        storage_id(api, stack, "local", "pve-node1"),
        sync_node_ids=str(nodes["pve-node3"]),
    )
    (task,) = wait_tasks(api, template_id)
    assert task["status"] == "completed", task
    vmids = {
        i["node_name"]: i["vmid"] for i in api.get(f"/templates/{template_id}/instances").ok()["instances"]
    }
    staged = rows_named(stack, name).uploads[0].staged_name

    stack.agents["pve-node3"].stop()  # a clean stop: the coordinator knows at once
    try:
        reply = api.delete(f"/templates/{template_id}?cascade=true")
        _check(_doc(api), "delete", "/api/v1/templates/{id}", 202, reply.body)  # as documented
        first = _accepted(reply)
        deletion = first["deletion"]
        assert deletion["reason"].startswith(
            "waiting for the agent of pve-node3 (no live agent on node pve-node3)"
        )
        assert deletion["remaining"] == [
            {"node_name": "pve-node3", "what": "vm", "vmid": vmids["pve-node3"]},
            {"node_name": "pve-node3", "what": "synced_copy", "vmid": None},
        ]
        # What the live nodes held went at once.
        assert vm_anywhere(stack, vmids["pve-node1"]) == []
        assert f"pve-node1/{staged}" not in staged_files(stack)
        assert vm_anywhere(stack, vmids["pve-node3"]) == ["pve-node3"]

        # Visible, deleting, with the same account everywhere; asking again changes nothing.
        shown = api.get(f"/templates/{template_id}").ok()
        listed = api.get(f"/templates?name={name}").ok()["list"]
        again = _accepted(api.delete(f"/templates/{template_id}?cascade=true"))
        for view in (shown, listed[0], again):
            assert view["status"] == "deleting"
            assert (view["deletion"]["reason"], view["deletion"]["remaining"]) == (
                deletion["reason"],
                deletion["remaining"],
            )
        assert api.get(f"/templates/{template_id}/detail").ok()["status"] == "deleting"
        assert len(_deletions(stack, template_id)) == 1

        # No new work on it, each refusal saying why.
        for reply in (
            api.put(f"/templates/{template_id}", json={"description": "x"}),
            api.post(f"/templates/{template_id}/sync", json={"target_node_ids": [nodes["pve-node2"]]}),
            api.delete(f"/templates/{template_id}"),
        ):
            assert (reply.status, reply.error) == (409, "template_deleting"), reply.body
            assert (
                reply.message
                == f"template {template_id} is being deleted; see its `deletion` for what is left and why"
            )
        image = images.qcow2(tmp_path / "again.qcow2", size_mib=16, data_mib=1)
        same_name = upload(api, stack, image, name, storage_id(api, stack, "local", "pve-node1"))
        assert (same_name.status, same_name.error) == (409, "template_name_taken")
        assert f"(template {template_id}, which is being deleted)" in same_name.message
    finally:
        stack.start_agent("pve-node3")  # returns once the coordinator lists it live
    took = _wait_gone(api, template_id)
    print(f"\ndeleted {took:.1f} s after pve-node3's agent was live again")
    assert vm_anywhere(stack, vmids["pve-node3"]) == []
    assert staged_files(stack) - staged_before == set()  # no staged image, no copy, anywhere
    rows = rows_named(stack, name)
    assert rows.instances == [] and rows.tasks == [] and rows.uploads[0].staged_name == ""
    assert [t.status for t in rows.templates] == ["deleted"]
    assert api.get(f"/templates?name={name}").ok()["total"] == 0


@SQLITE_ONLY
def test_a_delete_under_way_survives_a_coordinator_restart(stack: Stack, api: Api, tmp_path: Path) -> None:
    name = f"restarted-{secrets.token_hex(3)}"
    template_id = _imported(api, stack, tmp_path, name, storage_id(api, stack, "ceph-storage"))
    (instance,) = [
        i for i in api.get(f"/templates/{template_id}/instances").ok()["instances"] if i["is_primary"]
    ]
    owner, vmid = instance["node_name"], instance["vmid"]

    stack.agents[owner].stop()
    try:
        waiting = _accepted(api.delete(f"/templates/{template_id}?cascade=true"))["deletion"]
        assert waiting["remaining"] == [{"node_name": owner, "what": "vm", "vmid": vmid}]
        restart_coordinator(stack)
        # The job is in the database: the new coordinator shows it and goes on with it.
        after = api.get(f"/templates/{template_id}").ok()
        assert after["status"] == "deleting" and after["deletion"]["remaining"] == waiting["remaining"]
    finally:
        stack.start_agent(owner)
    took = _wait_gone(api, template_id)
    print(f"\ndeleted {took:.1f} s after {owner}'s agent was live again (coordinator restarted meanwhile)")
    assert vm_anywhere(stack, vmid) == []
    assert rows_named(stack, name).instances == []


@pytest.mark.mariadb
def test_concurrent_deletes_start_one_job_and_all_get_its_state(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    """The claim is a conditional UPDATE: on either database exactly one request starts the job."""
    name = f"many-deletes-{secrets.token_hex(3)}"
    template_id = _imported(api, stack, tmp_path, name, storage_id(api, stack, "ceph-storage"))
    (instance,) = [
        i for i in api.get(f"/templates/{template_id}/instances").ok()["instances"] if i["is_primary"]
    ]
    owner = instance["node_name"]

    stack.agents[owner].stop()
    try:
        with ThreadPoolExecutor(8) as pool:
            replies = list(
                pool.map(
                    lambda _: api.as_token(api.token).delete(f"/templates/{template_id}?cascade=true"),
                    range(8),
                )
            )
        states = [_accepted(r)["deletion"] for r in replies]
        assert {(s["reason"] or "", str(s["remaining"])) for s in states if s["remaining"]} == {
            (
                f"waiting for the agent of {owner} (no live agent on node {owner})",
                str([{"node_name": owner, "what": "vm", "vmid": instance["vmid"]}]),
            )
        }
        (deletion,) = _deletions(stack, template_id)
        assert deletion.status == "running"
    finally:
        stack.start_agent(owner)
    _wait_gone(api, template_id)
    (deletion,) = _deletions(stack, template_id)
    assert deletion.status == "done" and deletion.finished_at is not None
    assert vm_anywhere(stack, instance["vmid"]) == []

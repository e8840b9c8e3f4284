"""Deleting synced templates: nothing left on any node, and never under a running copy."""

from __future__ import annotations

from pathlib import Path

from demo.stack import Stack
from tests.support.api import Api
from tests.support.syncs import wait_task, wait_tasks
from tests.support.uploads import staged_files, vm_anywhere
from tests.sync.test_faults import local_template, start_sync


def test_cascade_waits_for_a_running_copy_then_removes_every_copy_and_vm(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    api, stack = slow_api, slow_stack
    staged_before = staged_files(stack)
    template_id, image = local_template(api, stack, tmp_path, "cascade", 64)
    copy_to_2, copy_to_3 = start_sync(api, stack, template_id, "pve-node2", "pve-node3")
    wait_task(api, copy_to_3, lambda t: t["status"] == "syncing" and t["bytes_done"] > 0)
    reply = api.delete(f"/templates/{template_id}?cascade=true")
    assert reply.status == 409 and reply.error == "sync_running" and "cancel it or wait" in reply.message
    assert api.get(f"/templates/{template_id}").status == 200  # nothing was hidden or removed

    # Cancel one copy half way; the other one completes. Then delete everything.
    api.post(f"/templates/sync-tasks/{copy_to_3}/cancel").ok()
    done = {t["task_id"]: t for t in wait_tasks(api, template_id)}
    assert (done[copy_to_2]["status"], done[copy_to_3]["status"]) == ("completed", "canceled")
    vmids = {i["vmid"] for i in api.get(f"/templates/{template_id}/instances").ok()["instances"]}
    assert len(vmids) == 2

    deleted = api.delete(f"/templates/{template_id}?cascade=true").ok()
    assert sorted(v["vmid"] for v in deleted["removed_vms"]) == sorted(vmids)
    # the upload's staged file, node 2's copy and node 3's partial one (a cancel keeps it for a retry)
    assert deleted["removed_images"] == 3
    assert all(vm_anywhere(stack, vmid) == [] for vmid in vmids)
    assert staged_files(stack) - staged_before == set()  # no copy, no partial, anywhere
    assert api.get(f"/templates/sync-tasks/{copy_to_2}").status == 404

"""A PVE that does not answer for a while is waited out; one that says no fails the job at once.

PVE goes down as in an operator's bad day: the emulator is killed alone and started again on
the same port with the same state, the agents and the coordinator running on. It goes down
while the agent's create call is on its way (held by the emulator for a few seconds: the
killed emulator never acts on it), so the import meets the outage at its PVE side.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.conftest import own_stack
from tests.support import images
from tests.support.api import Api
from tests.support.pve import Outage, fail_calls, hold_call, limit_free_space, pve_down, vms_marked, wait_held
from tests.support.syncs import receive_view, wait_task
from tests.support.uploads import (
    detail,
    local_image_dir,
    node_ids,
    staged_files,
    storage_id,
    upload,
    wait_for,
    wait_import,
)
from tests.sync.test_faults import restart_agent
from tests.sync.test_scenarios import assert_template_copy

SOURCE, TARGET = "pve-node1", "pve-node2"
DOWN = 6.0  # seconds PVE is away (the emulator takes 1-2 s more to start)
SHORT_DEADLINE = 6  # the agent's import_timeout for the import that cannot wait PVE out


@pytest.fixture(scope="module", params=["sqlite"])
def outage_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(request, tmp_path_factory, "outage")


@pytest.fixture
def outage_api(outage_stack: Stack) -> Api:
    return Api(outage_stack.api, outage_stack.admin_token)


def _image(tmp_path: Path) -> tuple[Path, str]:
    name = f"outage-{secrets.token_hex(3)}"
    return images.qcow2(tmp_path / f"{name}.qcow2", size_mib=16, data_mib=4), name


def _upload_local(api: Api, stack: Stack, image: Path, name: str) -> int:
    local = storage_id(api, stack, "local", SOURCE)
    return int(upload(api, stack, image, name, local).ok()["template_id"])


def _sync(api: Api, stack: Stack, template_id: int, node: str) -> int:
    body = {"target_node_ids": [node_ids(api, stack)[node]]}
    return int(api.post(f"/templates/{template_id}/sync", json=body).ok()["sync_tasks"][0]["task_id"])


def _recovered(what: str, outage: Outage) -> None:
    """The figures for the record (pytest -s): how long PVE was away, how long the job took after."""
    after = time.monotonic() - outage.ended
    print(f"\n{what}: PVE down {outage.seconds:.1f} s; done {after:.1f} s after it was back")


def _ended(task: dict[str, Any]) -> bool:
    return task["status"] in ("completed", "failed")


def test_an_upload_whose_import_meets_pve_down_completes_once_pve_is_back(
    outage_stack: Stack, outage_api: Api, tmp_path: Path
) -> None:
    stack, api = outage_stack, outage_api
    image, name = _image(tmp_path)
    held = hold_call(stack, "POST", f"/nodes/{SOURCE}/qemu$", 5)
    template_id = _upload_local(api, stack, image, name)
    wait_held(stack, held)
    with pve_down(stack) as outage:
        time.sleep(DOWN)
    info = wait_import(api, template_id)["upload_info"]
    _recovered("upload", outage)
    assert info["status"] == "imported" and info["error_message"] is None, info
    assert_template_copy(stack, SOURCE, info["vmid"], image, "qcow2")
    # one VM made (the create that PVE never acted on was not taken for a VM)
    assert vms_marked(stack, f"t{template_id}-") == [(SOURCE, info["vmid"])]


def test_a_sync_whose_import_meets_pve_down_completes_once_pve_is_back(
    outage_stack: Stack, outage_api: Api, tmp_path: Path
) -> None:
    stack, api = outage_stack, outage_api
    image, name = _image(tmp_path)
    template_id = _upload_local(api, stack, image, name)
    source_vmid = wait_import(api, template_id)["upload_info"]["vmid"]
    held = hold_call(stack, "POST", f"/nodes/{TARGET}/qemu$", 5)
    task_id = _sync(api, stack, template_id, TARGET)
    wait_held(stack, held)
    with pve_down(stack) as outage:
        time.sleep(DOWN)
    task = wait_task(api, task_id, _ended)
    _recovered("sync", outage)
    assert task["status"] == "completed" and task["error_message"] is None, task
    assert task["attempts"] == 1  # waited out inside the import, not a failed attempt
    assert_template_copy(stack, TARGET, task["vmid"], image, "qcow2")
    assert sorted(vms_marked(stack, f"t{template_id}-")) == [(SOURCE, source_vmid), (TARGET, task["vmid"])]


def test_a_sync_whose_import_starts_while_pve_is_down_waits_for_it(
    outage_stack: Stack, outage_api: Api, tmp_path: Path
) -> None:
    """The copy needs no PVE; the coordinator then reads the free VMIDs from PVE, which does
    not answer: it tries again until PVE is back (before, a failed attempt each time)."""
    stack, api = outage_stack, outage_api
    image, name = _image(tmp_path)
    template_id = _upload_local(api, stack, image, name)
    wait_import(api, template_id)
    with pve_down(stack) as outage:
        task_id = _sync(api, stack, template_id, TARGET)
        wait_task(api, task_id, lambda t: t["status"] != "syncing" and t["status"] != "pending")
        time.sleep(DOWN)
    task = wait_task(api, task_id, _ended)
    _recovered("sync (VMIDs read while PVE was down)", outage)
    assert task["status"] == "completed" and task["error_message"] is None, task
    assert task["attempts"] == 1
    assert_template_copy(stack, TARGET, task["vmid"], image, "qcow2")


def test_pve_down_past_the_import_deadline_fails_saying_what_was_retried_and_leaves_nothing(
    outage_stack: Stack, outage_api: Api, tmp_path: Path
) -> None:
    stack, api = outage_stack, outage_api
    image, name = _image(tmp_path)
    staged_before = staged_files(stack)
    restart_agent(stack, SOURCE, import_timeout=SHORT_DEADLINE, import_seconds_per_gib=0)
    try:
        held = hold_call(stack, "POST", f"/nodes/{SOURCE}/qemu$", 5)
        template_id = _upload_local(api, stack, image, name)
        wait_held(stack, held)
        with pve_down(stack) as outage:

            def failed() -> dict[str, Any] | None:
                info: dict[str, Any] = detail(api, template_id)["upload_info"]
                return info if info["status"] == "failed" else None

            info = wait_for(failed, 30, "the import to fail")
            print(f"\ndeadline: failed {time.monotonic() - outage.started:.1f} s after PVE went down")
    finally:
        restart_agent(stack, SOURCE)
    message = info["error_message"]
    assert f"import on {SOURCE} failed: PVE did not answer (" in message, message
    assert " times over " in message and f"deadline ({SHORT_DEADLINE} s)" in message, message
    assert vms_marked(stack, f"t{template_id}-") == []
    disks = local_image_dir(stack, SOURCE, "local", info["vmid"])
    assert not disks.exists() or list(disks.iterdir()) == []
    # the upload failed for good: its staged image is not kept for anyone
    assert wait_for(lambda: staged_files(stack) == staged_before, 10, "the staged image to go")


def test_pve_answering_503_is_waited_out_and_400_fails_at_once(
    outage_stack: Stack, outage_api: Api, tmp_path: Path
) -> None:
    stack, api = outage_stack, outage_api
    image, name = _image(tmp_path)
    fail_calls(stack, "POST", f"/nodes/{SOURCE}/qemu$", 503, times=2, message="Service Unavailable")
    template_id = _upload_local(api, stack, image, name)
    info = wait_import(api, template_id)["upload_info"]
    assert info["status"] == "imported" and info["error_message"] is None, info

    fail_calls(stack, "POST", f"/nodes/{SOURCE}/qemu$", 400, message="Parameter verification failed.")
    started = time.monotonic()
    other = _upload_local(api, stack, image, name + "-bad")
    info = wait_import(api, other)["upload_info"]
    assert info["status"] == "failed", info
    assert "400 Parameter verification failed." in info["error_message"], info
    assert "did not answer" not in info["error_message"]
    assert time.monotonic() - started < 10  # no backoff: failed at once
    assert vms_marked(stack, f"t{other}-") == []


def test_a_full_pve_storage_fails_the_import_naming_node_and_storage_and_leaves_nothing(
    outage_stack: Stack, outage_api: Api, tmp_path: Path
) -> None:
    """Upload: failed at once (no retry of an upload exists: its staged image goes). Sync task:
    failed at once, its verified copy kept; a retry after space was freed imports it without
    sending a byte again."""
    stack, api = outage_stack, outage_api
    image, name = _image(tmp_path)
    limit_free_space(stack, SOURCE, "local", 1 << 20)  # the image holds 4 MiB of data
    try:
        template_id = _upload_local(api, stack, image, name)
        info = wait_import(api, template_id)["upload_info"]
    finally:
        limit_free_space(stack, SOURCE, "local", None)
    assert info["status"] == "failed", info
    assert f"storage local on {SOURCE} is full: " in info["error_message"], info
    assert "No space left on device" in info["error_message"]
    assert vms_marked(stack, f"t{template_id}-") == []
    disks = local_image_dir(stack, SOURCE, "local", info["vmid"])
    assert not disks.exists() or list(disks.iterdir()) == []

    template_id = _upload_local(api, stack, image, name + "-sync")
    source_vmid = wait_import(api, template_id)["upload_info"]["vmid"]
    limit_free_space(stack, TARGET, "local", 1 << 20)
    try:
        task_id = _sync(api, stack, template_id, TARGET)
        task = wait_task(api, task_id, _ended)
    finally:
        limit_free_space(stack, TARGET, "local", None)
    assert task["status"] == "failed" and task["attempts"] == 1, task
    assert f"storage local on {TARGET} is full: " in task["error_message"], task
    assert vms_marked(stack, f"t{template_id}-") == [(SOURCE, source_vmid)]
    received = receive_view(stack, TARGET, task_id)["received_bytes"]

    api.post(f"/templates/sync-tasks/{task_id}/retry").ok()
    task = wait_task(api, task_id, _ended)
    assert task["status"] == "completed" and task["error_message"] is None, task
    assert receive_view(stack, TARGET, task_id)["received_bytes"] == received  # nothing sent again
    assert_template_copy(stack, TARGET, task["vmid"], image, "qcow2")

"""A job whose handler keeps raising unexpectedly fails within its kind's limits, saying why.

The fault is real: PVE (or a proxy before it) answers the coordinator's read of the used
VMIDs with 200 and a body without "data"; the coordinator's PVE client does not expect
that and raises KeyError, which neither job maps to an error of its own (its PveError cases).
Before the limits, the job was postponed 10 s and tried again forever, showing nothing.
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
from tests.support.pve import answering, vms_marked
from tests.support.syncs import wait_task
from tests.support.uploads import detail, node_ids, storage_id, upload, wait_for, wait_import

SOURCE, TARGET = "pve-node1", "pve-node2"
MAX_ERRORS = 3
DEADLINE = 60.0
USED_VMIDS = ("GET", r"^/cluster/resources$", {"unexpected": "no data here"})
UNEXPECTED = "KeyError: 'data'"


@pytest.fixture(scope="session", params=["sqlite"])
def limits_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    limits = {
        "job_error_retry_seconds": 0.5,
        "import_max_errors": MAX_ERRORS,
        "import_error_deadline": DEADLINE,
        "sync_max_errors": MAX_ERRORS,
        "sync_error_deadline": DEADLINE,
    }
    return own_stack(request, tmp_path_factory, "limits", coordinator_settings=limits)


@pytest.fixture
def limits_api(limits_stack: Stack) -> Api:
    return Api(limits_stack.api, limits_stack.admin_token)


def _upload_local(api: Api, stack: Stack, tmp_path: Path) -> int:
    name = f"limits-{secrets.token_hex(3)}"
    image = images.qcow2(tmp_path / f"{name}.qcow2", size_mib=8, data_mib=2)
    local = storage_id(api, stack, "local", SOURCE)
    return int(upload(api, stack, image, name, local).ok()["template_id"])


def _gave_up(message: str | None) -> None:
    assert message is not None and message.startswith(f"gave up after {MAX_ERRORS} unexpected errors over ")
    assert message.endswith(f"; last: {UNEXPECTED}"), message


def test_an_import_that_keeps_raising_fails_with_the_reason_within_its_deadline(
    limits_stack: Stack, limits_api: Api, tmp_path: Path
) -> None:
    stack, api = limits_stack, limits_api
    started = time.monotonic()
    with answering(stack, *USED_VMIDS):
        template_id = _upload_local(api, stack, tmp_path)
        info = wait_import(api, template_id, timeout=DEADLINE)["upload_info"]
    print(f"\nimport: failed {time.monotonic() - started:.1f} s after the upload began")
    assert info["status"] == "failed", info
    _gave_up(info["error_message"])
    assert [i["status"] for i in detail(api, template_id)["instances"]] == ["failed"]
    assert vms_marked(stack, f"t{template_id}-") == []


def test_a_sync_that_keeps_raising_fails_with_the_reason_within_its_deadline(
    limits_stack: Stack, limits_api: Api, tmp_path: Path
) -> None:
    stack, api = limits_stack, limits_api
    template_id = _upload_local(api, stack, tmp_path)
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    body = {"target_node_ids": [node_ids(api, stack)[TARGET]]}
    started = time.monotonic()
    with answering(stack, *USED_VMIDS):
        task_id = int(api.post(f"/templates/{template_id}/sync", json=body).ok()["sync_tasks"][0]["task_id"])

        def ended(task: dict[str, Any]) -> bool:
            return task["status"] in ("completed", "failed")

        task = wait_task(api, task_id, ended, timeout=DEADLINE)
    print(f"\nsync: failed {time.monotonic() - started:.1f} s after it was asked for")
    assert task["status"] == "failed", task
    _gave_up(task["error_message"])
    # the instance shows it as any failed sync does
    instances = {i["node_name"]: i["status"] for i in detail(api, template_id)["instances"]}
    assert instances[TARGET] == "failed", instances
    assert wait_for(lambda: len(vms_marked(stack, f"t{template_id}-")) == 1, 10, "only the source's VM")

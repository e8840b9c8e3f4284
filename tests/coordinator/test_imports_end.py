"""An import always ends: a PVE command that cannot start, a PVE task that never finishes
(the agent's deadline, the coordinator's), a template deleted while it imports.

Slow imports come from the emulator's import rate limit (qemu-img convert -r): the PVE
create task then runs for minutes, as a big disk on slow storage would.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from agent.client import AgentClient, AgentError
from coordinator.template_delete import IMPORT_STOPPED
from demo.stack import Stack
from shared.messages.imports import ImportRequest, ImportView
from shared.messages.uploads import Staged
from shared.staged_names import StagedName
from shared.text_fields import Description, StorageId, VmName
from tests.conftest import own_stack
from tests.support import images
from tests.support.agents import call_agent
from tests.support.api import Api
from tests.support.uploads import (
    detail,
    emulator,
    local_image_dir,
    node_ids,
    pve_tasks,
    rows_named,
    staged_files,
    storage_id,
    task_log,
    upload,
    vm_anywhere,
    wait_for,
    wait_import,
)
from tests.sync.test_faults import restart_agent

NODE = "pve-node1"
CRAWL = 64 << 10  # bytes/s: a 16 MiB disk takes minutes to import
AGENT_DEADLINE = 10  # seconds (import_timeout; no per-GiB part for these small images)
COORDINATOR_DEADLINE = 20


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def short_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A stack whose import deadlines are seconds, with one import slot. Stopped after this
    module: a stack left idle to the session's end still heartbeats and polls its jobs."""
    return own_stack(
        request,
        tmp_path_factory,
        "short",
        agent_settings={"import_timeout": AGENT_DEADLINE, "import_seconds_per_gib": 0},
        coordinator_settings={
            "import_timeout": COORDINATOR_DEADLINE,
            "import_seconds_per_gib": 0,
            "max_concurrent_imports": 1,
        },
    )


@pytest.fixture
def short_api(short_stack: Stack) -> Api:
    return Api(short_stack.api, short_stack.admin_token)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _crawling_import(
    api: Api, stack: Stack, tmp_path: Path, name: str, **fields: Any
) -> tuple[int, int, str]:
    """Upload to local storage on NODE with PVE's disk import crawling: (template id, VMID,
    UPID of the create task), once qemu-img runs at that rate. Later imports run at full speed."""
    image = images.qcow2(tmp_path / f"{name}.qcow2", size_mib=16, data_mib=2)
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": CRAWL})
    try:
        local = storage_id(api, stack, "local", NODE)
        template_id = upload(api, stack, image, name, local, **fields).ok()["template_id"]

        def converting() -> tuple[int, str] | None:
            info = detail(api, template_id)["upload_info"]
            assert info["status"] in ("uploaded", "importing"), info
            if info["vmid"] is None:
                return None
            for upid, ended in pve_tasks(stack, NODE, "qmcreate", info["vmid"]):
                if ended is None and any(line.startswith("transferred ") for line in task_log(stack, upid)):
                    return info["vmid"], upid
            return None

        vmid, upid = wait_for(converting, 60, "PVE converting the disk")
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    return template_id, vmid, upid


def _started(upid: str) -> tuple[int, int]:
    """When a task started (UPID:node:pid:pstart:starttime:...; the emulator's pids only grow)."""
    fields = upid.split(":")
    return int(fields[4], 16), int(fields[2], 16)


def _assert_stopped_and_removed(stack: Stack, vmid: int, upid: str) -> None:
    """The create task was stopped (PVE's verdict for an interrupted task), and neither the
    VM nor its disk is left. The VMID is free again then, and the next upload's import may
    have taken it already: a later create task of that VMID proves the stopped one's VM gone
    (PVE refuses to create over an existing VM), and what is there now is that import's."""
    tasks = pve_tasks(stack, NODE, "qmcreate", vmid)
    assert dict(tasks).get(upid) == "received interrupt", tasks
    if any(_started(other) > _started(upid) for other, _ in tasks):
        return
    assert vm_anywhere(stack, vmid) == []
    disks = local_image_dir(stack, NODE, "local", vmid)
    assert not disks.exists() or list(disks.iterdir()) == []


def test_a_pve_command_that_cannot_start_fails_the_import_with_the_reason(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    """pvesh cannot be started (here: not executable; before, a NUL byte on its command line
    raised ValueError in subprocess and left the import running forever). The import fails
    with that reason; it is not left running. A NUL byte never gets that far any more: the
    agent refuses it (400 naming the field) before anything runs."""
    image = images.qcow2(tmp_path / "nostart.qcow2", size_mib=16, data_mib=1)
    upload_id = 900_000 + secrets.randbelow(99_999)
    vmid = 800_000 + secrets.randbelow(99_999)

    async def stage(agent: AgentClient) -> Staged:
        async def body() -> Any:
            yield image.read_bytes()

        return await agent.upload(upload_id, "qcow2", 1 << 30, 1 << 30, body())

    staged = call_agent(stack, NODE, stage)
    key = f"t{upload_id}-u{upload_id}"
    request = ImportRequest(
        key=key,
        vmid=vmid,
        staged_name=StagedName(staged.staged_name),
        storage=StorageId("local"),
        name=VmName("nostart"),
    )
    pvesh = stack.pvesim_dir / "nodes" / NODE / "bin" / "pvesh"
    mode = pvesh.stat().st_mode
    try:
        with pytest.raises(AgentError) as refused:
            call_agent(
                stack,
                NODE,
                lambda agent: agent.start_import(
                    replace(request, description=Description("before\x00after"))
                ),
            )
        assert refused.value.status == 400 and "description" in refused.value.message

        pvesh.chmod(0o644)
        call_agent(stack, NODE, lambda agent: agent.start_import(request))

        def ended() -> ImportView | None:
            op = call_agent(stack, NODE, lambda agent: agent.get_import(key))
            return op if op.state != "running" else None

        op = wait_for(ended, 30, "the import to end")
        assert op.state == "failed", op
        assert "Permission denied" in str(op.error), op
        assert op.error_kind == "pve_error"
    finally:
        pvesh.chmod(mode)
        call_agent(stack, NODE, lambda agent: agent.delete_staged(staged.staged_name))
    assert vm_anywhere(stack, vmid) == []


def test_a_create_task_that_never_finishes_is_stopped_and_frees_the_import_slot(
    short_stack: Stack, short_api: Api, tmp_path: Path
) -> None:
    stack, api = short_stack, short_api
    stuck_name = _name("stuck")
    stuck, vmid, upid = _crawling_import(api, stack, tmp_path, stuck_name)
    # The only import slot is taken: the next upload waits for it.
    image = images.qcow2(tmp_path / "next.qcow2", size_mib=16, data_mib=2)
    next_name = _name("next")
    waiting = upload(api, stack, image, next_name, storage_id(api, stack, "local", NODE)).ok()
    both = detail(api, stuck)["upload_info"], detail(api, waiting["template_id"])["upload_info"]
    if both[0]["status"] == "importing":
        assert both[1]["status"] == "uploaded", both

    failed = wait_import(api, stuck, timeout=120)["upload_info"]
    assert failed["status"] == "failed"
    assert failed["error_message"] == (
        f"import on {NODE} failed: importing the disk of VM {vmid} did not finish within "
        f"{AGENT_DEADLINE} s; its PVE task was stopped"
    )
    _assert_stopped_and_removed(stack, vmid, upid)
    assert {i.status for i in rows_named(stack, stuck_name).instances} == {"failed"}

    # The staged copy and the job's lease are let go just after the status is written.
    def released() -> bool:
        staged = rows_named(stack, stuck_name).uploads[0]
        return staged.staged_name == "" and staged.lease_owner is None

    wait_for(released, 10, "the staged copy and the lease released")

    # The slot is free again: the waiting upload is imported.
    done = wait_import(api, waiting["template_id"], timeout=120)
    assert done["upload_info"]["status"] == "imported", done["upload_info"]
    assert {i["status"] for i in done["instances"]} == {"available"}


def test_the_coordinator_gives_up_on_an_import_that_outlasts_its_deadline(
    short_stack: Stack, short_api: Api, tmp_path: Path
) -> None:
    """An agent that would wait longer than the coordinator (here: a long agent deadline) is
    told to cancel; the upload fails with the coordinator's reason."""
    stack, api = short_stack, short_api
    restart_agent(stack, NODE, import_timeout=3600)
    try:
        name = _name("outlasting")
        template_id, vmid, upid = _crawling_import(api, stack, tmp_path, name)
        failed = wait_import(api, template_id, timeout=120)["upload_info"]
        assert failed["status"] == "failed"
        assert failed["error_message"] == (
            f"import on {NODE} failed: did not finish within {COORDINATOR_DEADLINE} s "
            "(the coordinator's deadline); canceled"
        )
        _assert_stopped_and_removed(stack, vmid, upid)
        key = f"t{template_id}-u{failed['upload_id']}"
        op = call_agent(stack, NODE, lambda agent: agent.get_import(key))
        assert (op.state, op.error_kind) == ("failed", "canceled")
        assert op.error == f"canceled: the coordinator waited {COORDINATOR_DEADLINE} s"
    finally:
        restart_agent(stack, NODE)


def test_cascade_delete_stops_a_running_import(stack: Stack, api: Api, tmp_path: Path) -> None:
    name = _name("deleted-mid-import")
    nodes = node_ids(api, stack)
    template_id, vmid, upid = _crawling_import(
        api, stack, tmp_path, name, sync_node_ids=str(nodes["pve-node2"])
    )
    staged = rows_named(stack, name).uploads[0].staged_name
    assert f"{NODE}/{staged}" in staged_files(stack)

    deleted = api.delete(f"/templates/{template_id}?cascade=true").ok()
    assert deleted["id"] == template_id and deleted["cascade"] is True
    assert deleted["removed_images"] == 1  # the staged upload
    # Stopped by the time the delete answered: no PVE task, VM, disk or staged image left.
    _assert_stopped_and_removed(stack, vmid, upid)
    assert f"{NODE}/{staged}" not in staged_files(stack)
    rows = rows_named(stack, name)
    assert rows.instances == [] and rows.tasks == []
    (upload_row,) = rows.uploads
    assert (upload_row.status, upload_row.error_message) == ("failed", IMPORT_STOPPED)
    assert api.get(f"/templates/{template_id}").status == 404
    op = call_agent(stack, NODE, lambda agent: agent.get_import(f"t{template_id}-u{upload_row.id}"))
    # Canceled by the delete's first step, or by the import job seeing its upload failed first.
    assert op.state == "failed"
    assert op.error in ("canceled: template deleted", "canceled: no longer wanted"), op

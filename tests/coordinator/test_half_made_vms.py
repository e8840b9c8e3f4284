"""A VM cut off mid-create (`lock: create`, no marker yet) is never leaked: the agent's VM
journal proves it ours, so cascade delete removes it, a retry reuses its VMID, and the
sweep removes it once the database no longer accounts for it. An administrator's VMs in
the template range (no marker, no journal entry) are never touched.

The cut-off comes from the emulator's `crash` task fault: PVE's create worker dies as an
OOM kill or a power loss kills it, leaving the bare `lock: create` config. To leave it for
a cascade delete or the sweep, the agent's own clean-up right after is refused once (as
when PVE is still down at that moment).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateUpload
from demo.stack import Stack
from tests.conftest import own_stack
from tests.support.api import Api
from tests.support.db import with_session
from tests.support.images import raw_with_data
from tests.support.syncs import wait_task
from tests.support.uploads import (
    detail,
    emulator,
    pve_tasks,
    storage_id,
    upload,
    vm_conf,
    wait_for,
    wait_import,
)
from tests.sync.test_faults import restart_coordinator, start_sync

NODE1, NODE2 = "pve-node1", "pve-node2"
SWEEP_INTERVAL = 1.0  # seconds, for the sweep's test (the default is 300)
# How long PVE's create runs before it dies in the sweep's test: longer than an agent and a
# coordinator restart take, so that the sweep meets it running.
CREATE_HELD = 20.0
NO_SWEEP = 3600.0  # the other tests leave cut-off VMs for a cascade delete or a retry to find


@pytest.fixture(scope="module", params=["sqlite"])
def journal_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(
        request, tmp_path_factory, "journal", coordinator_settings={"vm_sweep_interval": NO_SWEEP}
    )


@pytest.fixture
def japi(journal_stack: Stack) -> Api:
    return Api(journal_stack.api, journal_stack.admin_token)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def cut_off_next_create(stack: Stack, node: str, delay: float = 0) -> None:
    """PVE's next create task dies (after ``delay`` s) and the agent's clean-up after it is
    refused: the VM stays at `lock: create` with no description. (The agent takes the dead
    task for PVE gone away and tries again; the try starts by removing the cut-off VM, which
    PVE refuses, and that ends the import; its clean-up is refused too.)"""
    emulator(stack, "POST", "/pvesim/faults", {"type": "qmcreate", "crash": True, "delay": delay, "times": 1})
    emulator(
        stack,
        "POST",
        "/pvesim/faults",
        {"method": "DELETE", "path": f"/nodes/{node}/qemu/[0-9]+$", "message": "PVE is down", "times": 2},
    )


def last_create(stack: Stack, node: str, vmid: int) -> tuple[str, str | None] | None:
    """The newest create task of ``vmid`` (earlier tests' VMs may have had the same VMID):
    (UPID, how it ended; None while it runs)."""
    tasks = pve_tasks(stack, node, "qmcreate", vmid)
    # UPID:node:pid:pstart:starttime:...: the emulator's worker pids only grow
    return max(tasks, key=lambda t: (int(t[0].split(":")[4], 16), int(t[0].split(":")[2], 16)), default=None)


def create_ended(stack: Stack, node: str, vmid: int) -> bool:
    task = last_create(stack, node, vmid)
    return task is not None and task[1] is not None


def assert_cut_off(stack: Stack, node: str, vmid: int) -> None:
    conf = vm_conf(stack, node, vmid)
    assert conf == {"lock": "create"}, conf
    task = last_create(stack, node, vmid)
    assert task is not None and task[1] == "unexpected status", task


def journal(stack: Stack, node: str) -> dict[str, Any]:
    path = stack.agent_dir(node) / "vm-journal.json"
    return json.loads(path.read_text()) if path.exists() else {}


def local_upload(api: Api, stack: Stack, tmp_path: Path, name: str) -> int:
    image = raw_with_data(tmp_path / f"{name}.raw", 4, 2)
    return int(upload(api, stack, image, name, storage_id(api, stack, "local", NODE1)).ok()["template_id"])


def failed_upload_cut_off(api: Api, stack: Stack, tmp_path: Path) -> tuple[int, int]:
    """(template id, VMID) of an upload whose import was cut off mid-create on NODE1."""
    cut_off_next_create(stack, NODE1)
    template_id = local_upload(api, stack, tmp_path, _name("cut-off"))
    info = wait_import(api, template_id)["upload_info"]
    assert info["status"] == "failed" and "PVE is down" in info["error_message"], info
    vmid = int(info["vmid"])
    assert_cut_off(stack, NODE1, vmid)
    assert journal(stack, NODE1)[str(vmid)]["key"].startswith(f"t{template_id}-u")
    return template_id, vmid


def failed_sync_cut_off(api: Api, stack: Stack, tmp_path: Path) -> tuple[int, int, int]:
    """(template id, sync task id, VMID) of a sync whose import on NODE2 was cut off mid-create."""
    template_id = local_upload(api, stack, tmp_path, _name("sync-cut-off"))
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    cut_off_next_create(stack, NODE2)
    (task_id,) = start_sync(api, stack, template_id, NODE2)
    task = wait_task(api, task_id, lambda t: t["status"] in ("failed", "completed"))
    assert task["status"] == "failed" and "PVE is down" in task["error_message"], task
    vmid = int(task["vmid"])
    assert_cut_off(stack, NODE2, vmid)
    return template_id, task_id, vmid


def cascade(api: Api, template_id: int) -> list[tuple[str, int]]:
    deleted = api.delete(f"/templates/{template_id}?cascade=true").ok()
    return sorted((v["node_name"], v["vmid"]) for v in deleted["removed_vms"])


def test_an_upload_cut_off_mid_create_is_removed_by_cascade_delete(
    journal_stack: Stack, japi: Api, tmp_path: Path
) -> None:
    template_id, vmid = failed_upload_cut_off(japi, journal_stack, tmp_path)
    assert cascade(japi, template_id) == [(NODE1, vmid)]
    assert vm_conf(journal_stack, NODE1, vmid) is None
    assert str(vmid) not in journal(journal_stack, NODE1)


def test_a_sync_cut_off_mid_create_is_removed_by_cascade_delete(
    journal_stack: Stack, japi: Api, tmp_path: Path
) -> None:
    template_id, _task, vmid = failed_sync_cut_off(japi, journal_stack, tmp_path)
    removed = cascade(japi, template_id)
    assert (NODE2, vmid) in removed and len(removed) == 2, removed  # and the template's VM on NODE1
    assert vm_conf(journal_stack, NODE2, vmid) is None


def test_a_sync_retry_reuses_the_vmid_of_its_cut_off_create(
    journal_stack: Stack, japi: Api, tmp_path: Path
) -> None:
    template_id, task_id, vmid = failed_sync_cut_off(japi, journal_stack, tmp_path)
    japi.post(f"/templates/sync-tasks/{task_id}/retry").ok()
    task = wait_task(japi, task_id, lambda t: t["status"] in ("failed", "completed"))
    assert (task["status"], task["vmid"]) == ("completed", vmid), task
    conf = vm_conf(journal_stack, NODE2, vmid)
    assert conf is not None and conf.get("template") == "1" and "lock" not in conf
    assert str(vmid) not in journal(journal_stack, NODE2)
    cascade(japi, template_id)


def test_an_upload_retry_after_the_agent_died_mid_create_reuses_the_vmid(
    journal_stack: Stack, japi: Api, tmp_path: Path
) -> None:
    """The node's agent and PVE's create worker die together (a power loss): the import job
    tries again once the agent is back, and the agent, finding its own cut-off create at
    that VMID, removes it and imports again."""
    stack = journal_stack
    emulator(stack, "POST", "/pvesim/faults", {"type": "qmcreate", "crash": True, "delay": 3, "times": 1})
    template_id = local_upload(japi, stack, tmp_path, _name("power-loss"))

    def creating() -> int | None:
        vmid = detail(japi, template_id)["upload_info"]["vmid"]
        if not vmid or vm_conf(stack, NODE1, int(vmid)) != {"lock": "create"}:
            return None
        task = last_create(stack, NODE1, int(vmid))
        return int(vmid) if task is not None and task[1] is None else None

    vmid = wait_for(creating, 30, "PVE creating the VM")
    stack.agents[NODE1].signal(9)
    wait_for(lambda: create_ended(stack, NODE1, vmid), 10, "the create crashed")
    assert_cut_off(stack, NODE1, vmid)
    stack.start_agent(NODE1)
    info = wait_import(japi, template_id)["upload_info"]
    assert (info["status"], info["vmid"]) == ("imported", vmid), info
    assert vm_conf(stack, NODE1, vmid).get("template") == "1"  # type: ignore[union-attr]
    assert cascade(japi, template_id) == [(NODE1, vmid)]


def forgotten_while_creating(api: Api, stack: Stack, tmp_path: Path, crash_in: float) -> tuple[int, int]:
    """(template id, VMID) of an upload whose create PVE is still running (it dies in
    ``crash_in`` s) after NODE1's agent was killed and the database forgot the VM."""
    emulator(
        stack, "POST", "/pvesim/faults", {"type": "qmcreate", "crash": True, "delay": crash_in, "times": 1}
    )
    template_id = local_upload(api, stack, tmp_path, _name("forgotten"))

    def creating() -> int | None:
        vmid = detail(api, template_id)["upload_info"]["vmid"]
        if not vmid or vm_conf(stack, NODE1, int(vmid)) != {"lock": "create"}:
            return None
        task = last_create(stack, NODE1, int(vmid))
        return int(vmid) if task is not None and task[1] is None else None

    vmid = wait_for(creating, 30, "PVE creating the VM")
    stack.agents[NODE1].signal(9)

    async def forget(session: AsyncSession) -> None:
        values = {"status": "failed", "error_message": "forgotten", "vmid": None}
        await session.execute(
            update(TemplateUpload).where(TemplateUpload.template_id == template_id).values(**values)
        )
        await session.commit()

    with_session(stack.database_url, forget)
    stack.start_agent(NODE1)
    return template_id, vmid


def admin_vm(stack: Stack, node: str, vmid: int, cut_off: bool) -> None:
    """What an administrator makes by hand in the template range: a name like ours, our tag,
    a description mentioning pvesphere; ``cut_off``: its create died at `lock: create`."""
    if cut_off:
        emulator(stack, "POST", "/pvesim/faults", {"type": "qmcreate", "task_id": str(vmid), "crash": True})
    pvesh = stack.pvesim_dir / "nodes" / node / "bin" / "pvesh"
    args = ["-vmid", str(vmid), "-name", "ubuntu-template", "-tags", "pvesphere"]
    args += ["-description", "copied from [pvesphere] by hand"]
    subprocess.run([str(pvesh), "create", f"/nodes/{node}/qemu", *args], check=True, capture_output=True)
    assert (vm_conf(stack, node, vmid) == {"lock": "create"}) is cut_off


def what_became_of(stack: Stack, node: str, vmid: int, coordinator_log: str) -> str:
    """The sweep's lines and those of the node's agent about ``vmid`` (for a failure's report)."""
    agent_log = (stack.base / "logs" / f"agent-{node}.log").read_text()
    sweep = [line for line in coordinator_log.splitlines() if "VM sweep" in line]
    about = [line for line in agent_log.splitlines() if f" {vmid}" in line]
    return "\n".join(["sweep:", *sweep, f"agent on {node} about VM {vmid}:", *about])


def test_the_sweep_removes_cut_off_vms_nothing_accounts_for_and_nothing_else(
    journal_stack: Stack, japi: Api, tmp_path: Path
) -> None:
    stack = journal_stack
    admin_locked, admin_done = 9990, 9991  # in the template range (9000-9999)
    admin_vm(stack, NODE2, admin_locked, cut_off=True)
    admin_vm(stack, NODE2, admin_done, cut_off=False)
    kept_id = local_upload(japi, stack, tmp_path, _name("kept"))
    kept_vmid = int(wait_import(japi, kept_id)["upload_info"]["vmid"])
    # Leaks: a failed upload's and a failed sync task's cut-off creates (a failed job holds
    # no VM: the database no longer accounts for them).
    upload_template, upload_vmid = failed_upload_cut_off(japi, stack, tmp_path)
    sync_template, _task, sync_vmid = failed_sync_cut_off(japi, stack, tmp_path)
    leaks = [(NODE1, upload_vmid), (NODE2, sync_vmid)]
    # And one whose create is still running in PVE while nothing accounts for it any more:
    # its agent died (no import of its own runs) and the database forgot it.
    creating_template, creating_vmid = forgotten_while_creating(japi, stack, tmp_path, crash_in=CREATE_HELD)

    restart_coordinator(stack, vm_sweep_interval=SWEEP_INTERVAL)
    started = time.monotonic()
    try:
        for node, vmid in leaks:
            wait_for(lambda: vm_conf(stack, node, vmid) is None, 15, f"the sweep removing VM {vmid}")  # noqa: B023
        found = time.monotonic() - started
        # Left alone while its create runs; removed once the create ended (here: it died).
        assert not create_ended(stack, NODE1, creating_vmid), "the create ended before the sweep met it"
        assert vm_conf(stack, NODE1, creating_vmid) == {"lock": "create"}
        wait_for(
            lambda: vm_conf(stack, NODE1, creating_vmid) is None,
            CREATE_HELD + 10,
            "the sweep removing it after",
        )
        time.sleep(3 * SWEEP_INTERVAL)  # more rounds: what they must not touch is still there
        log = (stack.base / "logs" / "coordinator.log").read_text()
    finally:
        restart_coordinator(stack, vm_sweep_interval=NO_SWEEP)
    print(
        f"sweeping every {SWEEP_INTERVAL:.0f} s: both leaks gone {found:.1f} s after the coordinator started"
    )
    assert vm_conf(stack, NODE2, admin_locked) == {"lock": "create"}
    assert (vm_conf(stack, NODE2, admin_done) or {}).get("name") == "ubuntu-template"
    assert (vm_conf(stack, NODE1, kept_vmid) or {}).get("template") == "1"
    assert detail(japi, kept_id)["upload_info"]["status"] == "imported"
    for node, vmid in [*leaks, (NODE1, creating_vmid)]:
        assert f"VM sweep: removed VM {vmid} on {node}" in log, what_became_of(stack, node, vmid, log)
    busy = f"VM sweep: VM {creating_vmid} on {NODE1} left for now: VM {creating_vmid} on {NODE1} is being"
    assert busy in log
    for template_id in (kept_id, upload_template, sync_template, creating_template):
        cascade(japi, template_id)

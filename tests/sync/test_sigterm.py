"""A graceful stop (SIGTERM, as systemd stops a unit) of each single process mid-work.

The coordinator, a sending agent, a receiving agent and the agent importing an upload each
get SIGTERM in the middle of their work: each must exit within its stop deadline, say in
its log what it was doing and what is left to resume, and after a restart the work
completes with nothing lost, nothing leaked and every copy bit-identical. The emulator's
outages are another test's subject. On SQLite only: the database plays no part here.
"""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

import pytest

from agent.shutdown import STOP_DEADLINE as AGENT_STOP_DEADLINE
from coordinator.listeners import STOP_DEADLINE as COORDINATOR_STOP_DEADLINE
from demo.stack import Proc, Stack
from shared.frames import CHUNK
from tests.conftest import own_stack
from tests.support import syncs
from tests.support.api import Api
from tests.support.images import raw_with_data
from tests.support.syncs import partial_files, receive_view, received_copy, sha256, wait_task, wait_tasks
from tests.support.uploads import all_vmids, emulator, importing_slowly, pve_tasks, rows_named, wait_import
from tests.sync.test_faults import local_template, restart_coordinator, start_sync
from tests.sync.test_scenarios import assert_template_copy

SEND_RATE = 8 << 20  # bytes/s per agent: a 64 MiB copy takes 8 s
IMPORT_RATE = 1 << 20  # bytes/s for PVE's disk import: an 8 MiB disk takes ~8 s
IDLE = 5  # sync_idle_timeout: a copy whose sender is gone is retried after this many seconds
# What an interpreter takes to exit, besides the stop deadline the process sets itself.
EXIT = 1.0


@pytest.fixture(scope="module", params=["sqlite"])
def term_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(
        request,
        tmp_path_factory,
        "sigterm",
        agent_settings={"max_send_rate": SEND_RATE},
        coordinator_settings={"sync_idle_timeout": IDLE},
    )


@pytest.fixture
def term_api(term_stack: Stack) -> Api:
    return Api(term_stack.api, term_stack.admin_token)


def terminate(proc: Proc, deadline: float) -> tuple[float, str]:
    """SIGTERM, and wait for the exit within ``deadline`` s: (seconds it took, what it
    logged meanwhile)."""
    logged = proc.log_path.stat().st_size
    start = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.popen is not None
    code = proc.popen.wait(deadline + 10)
    took = time.monotonic() - start
    proc.stop()  # closes its log
    with open(proc.log_path, errors="replace") as f:
        f.seek(logged)
        log = f.read()
    assert code == 0, f"{proc.name} exited {code}:\n{log}"
    assert took < deadline + EXIT, f"{proc.name} took {took:.1f} s to stop:\n{log}"
    assert "Traceback" not in log, log
    return took, log


def slow_import(api: Api, stack: Stack, tmp_path: Path, node: str) -> tuple[int, int, Path, str]:
    """An upload to ``node`` whose import PVE is converting now, at IMPORT_RATE:
    (template id, VMID, image, name)."""
    image = raw_with_data(tmp_path / "slow-import.raw", 8, 8, seed=5)
    name = f"term-import-{secrets.token_hex(3)}"
    return (*importing_slowly(api, stack, image, name, node, IMPORT_RATE), image, name)


def assert_imported(stack: Stack, name: str, node: str, vmid: int, image: Path, creates: list[str]) -> None:
    """The upload is VM ``vmid`` on ``node``, its disk the image; PVE's create tasks for it
    ended as ``creates`` says."""
    assert_template_copy(stack, node, vmid, image, "raw")
    assert [ended for _, ended in pve_tasks(stack, node, "qmcreate", vmid)] == creates
    rows = rows_named(stack, name)
    assert [(i.status, i.vmid) for i in rows.instances] == [("available", vmid)]
    assert [u.lease_owner for u in rows.uploads] == [None]


def test_coordinator_sigterm_mid_import_and_mid_copy(
    term_stack: Stack, term_api: Api, tmp_path: Path
) -> None:
    api, stack = term_api, term_stack
    sync_template, sync_image = local_template(api, stack, tmp_path, "term-coord", 64)
    vms_before = all_vmids(stack)
    size = sync_image.stat().st_size
    (task_id,) = start_sync(api, stack, sync_template, "pve-node2")
    try:
        template_id, vmid, image, name = slow_import(api, stack, tmp_path, "pve-node3")
        wait_task(api, task_id, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.1)
        assert stack.coordinator is not None
        took, log = terminate(stack.coordinator, COORDINATOR_STOP_DEADLINE)
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
        restart_coordinator(stack, sync_idle_timeout=IDLE)
    back = time.monotonic()
    print(f"coordinator stopped in {took:.1f} s")
    assert "left to resume" in log, log
    info = wait_import(api, template_id)["upload_info"]
    (task,) = wait_tasks(api, sync_template)
    print(f"import and copy done {time.monotonic() - back:.1f} s after the restart")
    assert info["status"] == "imported" and info["vmid"] == vmid, info
    assert_imported(stack, name, "pve-node3", vmid, image, ["OK"])  # PVE's task went on meanwhile
    assert (task["status"], task["attempts"]) == ("completed", 1), task
    assert all_vmids(stack) - vms_before == {vmid, task["vmid"]}  # nothing leaked
    assert sha256(received_copy(stack, "pve-node2", task_id)) == syncs.guest_sha256(sync_image)
    assert receive_view(stack, "pve-node2", task_id)["received_bytes"] == size  # nothing sent twice


@pytest.mark.parametrize("node", ["pve-node1", "pve-node2"], ids=["sender", "receiver"])
def test_agent_sigterm_mid_copy_resumes(term_stack: Stack, term_api: Api, tmp_path: Path, node: str) -> None:
    api, stack = term_api, term_stack
    template_id, image = local_template(api, stack, tmp_path, f"term-{node}", 64)
    size = image.stat().st_size
    (task_id,) = start_sync(api, stack, template_id, "pve-node2")
    seen = wait_task(api, task_id, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.3)
    try:
        took, log = terminate(stack.agents[node], AGENT_STOP_DEADLINE)
    finally:
        stack.start_agent(node)
    back = time.monotonic()
    print(f"agent of {node} stopped in {took:.1f} s")
    assert "left to resume" in log, log
    (task,) = wait_tasks(api, template_id)
    print(f"copy done {time.monotonic() - back:.1f} s after the restart")
    assert task["status"] == "completed", task
    assert sha256(received_copy(stack, "pve-node2", task_id)) == syncs.guest_sha256(image)
    assert_template_copy(stack, "pve-node2", task["vmid"], image, "raw")
    # Nothing verified was sent again: at most the chunks in flight at the stop.
    view = receive_view(stack, "pve-node2", task_id)
    assert size <= view["received_bytes"] <= size + 6 * CHUNK, view
    if node == "pve-node1":  # (a receiver may finish the copy in its stop's grace for requests)
        assert seen["bytes_done"] <= view["resumed_from"] < size, view
        # The coordinator saw the sender's process go, without waiting for the idle timeout.
        coordinator_log = (stack.base / "logs" / "coordinator.log").read_text()
        assert f"the source's agent on {node} stopped or restarted" in coordinator_log
    assert partial_files(stack, "pve-node2") == []


def test_importing_agent_sigterm_mid_import(term_stack: Stack, term_api: Api, tmp_path: Path) -> None:
    api, stack = term_api, term_stack
    vms_before = all_vmids(stack)
    try:
        template_id, vmid, image, name = slow_import(api, stack, tmp_path, "pve-node1")
        took, log = terminate(stack.agents["pve-node1"], AGENT_STOP_DEADLINE)
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
        stack.start_agent("pve-node1")
    back = time.monotonic()
    print(f"agent stopped in {took:.1f} s")
    assert "left to resume" in log, log
    info = wait_import(api, template_id)["upload_info"]
    print(f"import done {time.monotonic() - back:.1f} s after the restart")
    assert info["status"] == "imported" and info["vmid"] == vmid, info
    # The stopping agent stopped PVE's task and removed the VM; the coordinator asked again.
    assert_imported(stack, name, "pve-node1", vmid, image, ["received interrupt", "OK"])
    assert f"no unfinished VM {vmid} left" in log or f"removed the unfinished VM {vmid}" in log, log
    assert all_vmids(stack) - vms_before == {vmid}  # nothing leaked

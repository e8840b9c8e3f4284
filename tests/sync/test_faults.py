"""Faults during a copy: an agent killed, a chunk corrupted, a full disk, a coordinator restart.

All on ``slow_stack`` (agents send at SEND_RATE), so there is time to hurt a copy in flight.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateSyncTask
from coordinator.db.types import utcnow
from demo.stack import Stack
from shared.frames import CHUNK
from tests.support.api import Api
from tests.support.db import with_session
from tests.support.images import MiB, raw_with_data
from tests.support.proxies import DataStreamProxy, Relay
from tests.support.syncs import (
    agent_get,
    guest_sha256,
    partial_files,
    receive_view,
    received_copy,
    run_cleanup,
    sha256,
    wait_task,
    wait_tasks,
)
from tests.support.uploads import node_ids, storage_id, upload, wait_for, wait_import
from tests.sync.test_scenarios import assert_template_copy


def local_template(api: Api, stack: Stack, tmp_path: Path, name: str, mib: int) -> tuple[int, Path]:
    image = raw_with_data(tmp_path / f"{name}.raw", mib, mib, seed=mib)
    data = upload(
        api, stack, image, f"{name}-{secrets.token_hex(3)}", storage_id(api, stack, "local", "pve-node1")
    )
    template_id = int(data.ok()["template_id"])
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    return template_id, image


def start_sync(api: Api, stack: Stack, template_id: int, *nodes: str) -> list[int]:
    ids = node_ids(api, stack)
    started = api.post(
        f"/templates/{template_id}/sync", json={"target_node_ids": [ids[n] for n in nodes]}
    ).ok()
    return [t["task_id"] for t in started["sync_tasks"]]


def restart_agent(stack: Stack, node: str, **settings: object) -> None:
    """Restart a node's agent with these settings (none: back to the stack's defaults)."""
    if settings:
        stack.s.node_agent_settings[node] = dict(settings)
    else:
        stack.s.node_agent_settings.pop(node, None)
    stack.agents[node].stop()
    stack.start_agent(node)


@contextlib.contextmanager
def behind(stack: Stack, node: str, proxy: Relay) -> Iterator[None]:
    """Inside: ``node``'s agent is reached (by the coordinator and its peers) through ``proxy``."""
    restart_agent(stack, node, advertise_url=f"https://127.0.0.1:{proxy.port}")
    try:
        yield
    finally:
        proxy.close()
        restart_agent(stack, node)


def restart_coordinator(stack: Stack, **settings: object) -> None:
    """Restart the coordinator with exactly these extra settings (none: none)."""
    assert stack.coordinator is not None
    stack.coordinator.stop()
    stack.s.coordinator_settings = dict(settings)
    stack.write_coordinator_config()
    stack.start_coordinator()


def test_target_killed_half_way_resumes_and_completes(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    api, stack = slow_api, slow_stack
    template_id, image = local_template(api, stack, tmp_path, "killed", 96)
    size = image.stat().st_size
    (task_id,) = start_sync(api, stack, template_id, "pve-node2")
    seen = wait_task(api, task_id, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.4)

    stack.agents["pve-node2"].signal(signal.SIGKILL)  # no goodbye, no flush: as if the node lost power
    stack.agents["pve-node2"].stop()
    stack.start_agent("pve-node2")

    (task,) = wait_tasks(api, template_id)
    assert task["status"] == "completed", task
    assert sha256(received_copy(stack, "pve-node2", task_id)) == guest_sha256(image)
    assert_template_copy(stack, "pve-node2", task["vmid"], image, "raw")
    # It resumed where the copy on disk ended: at least as far as the progress seen before the kill,
    # so only what was in flight then was sent again.
    view = receive_view(stack, "pve-node2", task_id)
    assert seen["bytes_done"] <= view["resumed_from"] < size
    assert partial_files(stack, "pve-node2") == []


def test_a_dead_relay_is_routed_around(slow_stack: Stack, slow_api: Api, tmp_path: Path) -> None:
    """pve-node1 -> 2 -> 3: node2 dies mid-copy; node3 gets the rest from the source, keeping
    what node2 had relayed; node2 catches up once it is back."""
    api, stack = slow_api, slow_stack
    template_id, image = local_template(api, stack, tmp_path, "relay-dies", 96)
    size = image.stat().st_size
    relay_task, last_task = start_sync(api, stack, template_id, "pve-node2", "pve-node3")
    relayed = wait_task(api, last_task, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.3)
    assert relayed["source_node"]["node_name"] == "pve-node2"

    stack.agents["pve-node2"].signal(signal.SIGKILL)
    stack.agents["pve-node2"].stop()
    try:
        last = wait_task(api, last_task, lambda t: t["status"] in ("completed", "failed"))
        assert last["status"] == "completed", last
        assert last["source_node"]["node_name"] == "pve-node1"  # where the rest came from
        assert sha256(received_copy(stack, "pve-node3", last_task)) == guest_sha256(image)
        assert_template_copy(stack, "pve-node3", last["vmid"], image, "raw")
        # What came through node2 before it died was kept: node3's last stream (from the
        # source) began where the relayed bytes ended.
        assert size * 0.3 <= receive_view(stack, "pve-node3", last_task)["resumed_from"] < size
        source_log = (stack.base / "logs" / "agent-pve-node1.log").read_text()
        assert "routing around it to pve-node3" in source_log
        assert api.get(f"/templates/sync-tasks/{relay_task}").ok()["status"] != "completed"
    finally:
        stack.start_agent("pve-node2")

    tasks = wait_tasks(api, template_id)
    assert [t["status"] for t in tasks] == ["completed", "completed"], tasks
    assert sha256(received_copy(stack, "pve-node2", relay_task)) == guest_sha256(image)
    assert partial_files(stack, "pve-node2") == [] and partial_files(stack, "pve-node3") == []


class CorruptingProxy(DataStreamProxy):
    """Flips one byte inside the first data stream it sees."""

    def __init__(self, stack: Stack, node: str, body_offset: int) -> None:
        self.body_offset = body_offset
        self.flipped = threading.Event()
        super().__init__(stack, node)

    def body(self, data: bytes, offset: int) -> bytes | None:
        at = self.body_offset - offset
        if not self.flipped.is_set() and 0 <= at < len(data):
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
            self.flipped.set()
        return data


class CuttingProxy(DataStreamProxy):
    """Cuts the first data stream after ``first_bytes`` of its body and every later one at
    once, until ``healed`` is set."""

    def __init__(self, stack: Stack, node: str, first_bytes: int) -> None:
        self.first_bytes = first_bytes
        self.first_cut = threading.Event()
        self.healed = threading.Event()
        super().__init__(stack, node)

    def body(self, data: bytes, offset: int) -> bytes | None:
        if self.healed.is_set():
            return data
        if self.first_cut.is_set() and offset == 0:
            return None
        if offset + len(data) > self.first_bytes:
            self.first_cut.set()
            return None
        return data


def test_a_chunk_corrupted_in_transit_is_detected_and_sent_again(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    api, stack = slow_api, slow_stack
    proxy = CorruptingProxy(stack, "pve-node2", body_offset=2 * CHUNK + 4096)
    with behind(stack, "pve-node2", proxy):
        template_id, image = local_template(api, stack, tmp_path, "corrupt", 48)
        (task_id,) = start_sync(api, stack, template_id, "pve-node2")
        (task,) = wait_tasks(api, template_id)
        refused = digest_mismatches(stack, "pve-node2")  # (its agent restarts on the way out)
    assert proxy.flipped.is_set()
    assert task["status"] == "completed", task
    view = receive_view(stack, "pve-node2", task_id)
    assert view["corrupt_chunks"] == 1
    assert image.stat().st_size < view["received_bytes"] <= image.stat().st_size + 6 * CHUNK
    assert sha256(received_copy(stack, "pve-node2", task_id)) == guest_sha256(image)
    assert_template_copy(stack, "pve-node2", task["vmid"], image, "raw")
    log = (stack.base / "logs" / "agent-pve-node2.log").read_text()
    assert "failed its digest check" in log
    assert refused == 1  # its /metrics


def digest_mismatches(stack: Stack, node: str) -> float:
    """pvesphere_agent_chunks_rejected_total{reason="digest_mismatch"} of the node's agent."""
    text = requests.get(stack.agent_url(node) + "/metrics", timeout=10, verify=str(stack.ca_file)).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return sum(
        s.value
        for s in samples
        if s.name == "pvesphere_agent_chunks_rejected_total" and s.labels == {"reason": "digest_mismatch"}
    )


def test_a_copy_that_keeps_breaking_fails_after_its_attempts_and_retry_resumes(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    api, stack = slow_api, slow_stack
    proxy = CuttingProxy(stack, "pve-node2", first_bytes=8 * CHUNK + 100)
    restart_agent(stack, "pve-node2", advertise_url=f"https://127.0.0.1:{proxy.port}")
    restart_coordinator(stack, sync_max_attempts=2, sync_idle_timeout=5)
    try:
        template_id, image = local_template(api, stack, tmp_path, "breaking", 64)
        (task_id,) = start_sync(api, stack, template_id, "pve-node2")
        # Every stream is cut: attempt 1 gets some bytes through, attempt 2 none; then it fails.
        failed = wait_task(api, task_id, lambda t: t["status"] in ("failed", "completed"), timeout=180)
        assert failed["status"] == "failed" and failed["attempts"] == 2, failed
        assert failed["error_message"].startswith(
            "gave up after 2 attempts: no data reached pve-node2 for 5 s"
        )
        verified = receive_view(stack, "pve-node2", task_id)["verified"]
        assert failed["bytes_done"] == verified and 0 < verified < image.stat().st_size
        assert proxy.first_cut.is_set()

        proxy.healed.set()
        api.post(f"/templates/sync-tasks/{task_id}/retry").ok()
        (task,) = wait_tasks(api, template_id)
    finally:
        restart_coordinator(stack)
        proxy.close()
        restart_agent(stack, "pve-node2")
    assert task["status"] == "completed" and task["attempts"] == 3, task  # the manual retry's counts
    assert receive_view(stack, "pve-node2", task_id)["resumed_from"] == verified  # nothing sent twice
    assert sha256(received_copy(stack, "pve-node2", task_id)) == guest_sha256(image)
    assert_template_copy(stack, "pve-node2", task["vmid"], image, "raw")


def test_a_canceled_copy_keeps_its_verified_bytes_for_a_retry_until_the_janitor_removes_them(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    """Contract 6.6: a cancel keeps the bytes already verified for a later retry, until they
    are cleaned up (the janitor, after keep_failed_copies_hours)."""
    api, stack = slow_api, slow_stack
    # 128 MiB: over 5 s at SEND_RATE, so that a cancel at a quarter usually lands mid-copy.
    template_id, image = local_template(api, stack, tmp_path, "canceled", 128)
    size = image.stat().st_size
    kept_copy, cleaned_copy = start_sync(api, stack, template_id, "pve-node2", "pve-node3")
    # The chain's end first: canceled first, pve-node2 (its relay) would be routed around,
    # and a ticket issued for that just before pve-node3's cancel starts its copy again.
    for task_id in (cleaned_copy, kept_copy):
        wait_task(api, task_id, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.25)
        api.post(f"/templates/sync-tasks/{task_id}/cancel").ok()
    # What was verified stays (on a loaded machine the stream may have ended the copy before
    # the cancel reached it: then the whole image stays).
    kept = receive_view(stack, "pve-node2", kept_copy)["verified"]
    assert 0 < kept <= size
    assert run_cleanup(stack, older_than=timedelta(hours=1)) == 0  # not old yet: both stay
    assert receive_view(stack, "pve-node3", cleaned_copy)["verified"] > 0

    # Left past the retention: the janitor removes the copy, and a retry starts from byte 0.
    with_session(stack.database_url, lambda session: _age(session, cleaned_copy))
    assert run_cleanup(stack, older_than=timedelta(minutes=30)) >= 1
    kept = receive_view(stack, "pve-node2", kept_copy)["verified"]  # still young: kept (what was
    assert 0 < kept <= size  # in flight at the cancel is verified too)
    assert agent_get(stack, "pve-node3", f"/v1/receives/{cleaned_copy}").status_code == 404
    cleaned = api.get(f"/templates/sync-tasks/{cleaned_copy}").ok()
    assert (cleaned["status"], cleaned["bytes_done"], cleaned["progress"]) == ("canceled", 0, 0)

    for task_id in (kept_copy, cleaned_copy):
        api.post(f"/templates/sync-tasks/{task_id}/retry").ok()
    tasks = {t["task_id"]: t for t in wait_tasks(api, template_id, timeout=180)}
    assert [tasks[t]["status"] for t in (kept_copy, cleaned_copy)] == ["completed", "completed"], tasks
    # (The kept copy resumes as a failed task's does, test_a_copy_that_keeps_breaking_...;
    # here its stream may even have finished the image before the cancel reached it.)
    assert receive_view(stack, "pve-node3", cleaned_copy)["resumed_from"] == 0
    for node, task_id in (("pve-node2", kept_copy), ("pve-node3", cleaned_copy)):
        assert sha256(received_copy(stack, node, task_id)) == guest_sha256(image)


async def _age(session: AsyncSession, task_id: int) -> None:
    """The task ended an hour ago."""
    await session.execute(
        update(TemplateSyncTask)
        .where(TemplateSyncTask.id == task_id)
        .values(updated_at=utcnow() - timedelta(hours=1))
    )
    await session.commit()


@pytest.fixture
def small_disk_on_node3(slow_stack: Stack, tmp_path: Path) -> Iterator[Path]:
    """pve-node3's agent stages on a 200 MiB tmpfs for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as node 3's staging disk needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], check=True)
    restart_agent(slow_stack, "pve-node3", staging_dir=str(mount / "staging"))
    try:
        yield mount / "staging"
    finally:
        restart_agent(slow_stack, "pve-node3")
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_staging_disk_fails_clearly_and_harms_nothing_else(
    slow_stack: Stack, slow_api: Api, tmp_path: Path, small_disk_on_node3: Path
) -> None:
    api, stack, staging = slow_api, slow_stack, small_disk_on_node3
    # Too big from the start: refused before a byte is written.
    big_id, _ = local_template(api, stack, tmp_path, "too-big", 160)
    (big_task,) = start_sync(api, stack, big_id, "pve-node3")
    failed = wait_task(api, big_task, lambda t: t["status"] in ("failed", "completed"))
    assert failed["status"] == "failed"
    assert "staging disk on pve-node3 is too small" in failed["error_message"]
    assert list(staging.glob("*.part")) == [] and list(staging.glob("sync-*")) == []

    # Fits, but the disk fills up while it arrives (something else wrote to it). 128 MiB: 5 s
    # at SEND_RATE, time enough to fill the disk after the first progress report on a loaded
    # machine (with 64 MiB the copy was once over before the disk was full).
    mid_id, mid_image = local_template(api, stack, tmp_path, "disk-fills", 128)
    (mid_task,) = start_sync(api, stack, mid_id, "pve-node3")
    wait_task(api, mid_task, lambda t: t["bytes_done"] >= 4 * MiB)
    filler = staging.parent / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):  # take (nearly) every free byte
        taken = 0
        while True:
            os.posix_fallocate(f.fileno(), taken, MiB)
            taken += MiB
    failed = wait_task(api, mid_task, lambda t: t["status"] in ("failed", "completed"))
    assert failed["status"] == "failed"
    assert "staging disk is full" in failed["error_message"] and "pve-node3" in failed["error_message"]
    # What was verified before the disk filled stays, cut back to whole verified chunks.
    at_failure = receive_view(stack, "pve-node3", mid_task)
    verified = at_failure["verified"]
    assert f"its {verified} verified bytes are kept" in failed["error_message"]
    (part,) = staging.glob("*.part")
    assert 4 * MiB <= verified < mid_image.stat().st_size and part.stat().st_size == verified

    # Other templates are unharmed: a small one still syncs there; with room again, retry works.
    filler.unlink()
    small_id, small_image = local_template(api, stack, tmp_path, "small", 16)
    start_sync(api, stack, small_id, "pve-node3", "pve-node2")
    assert {t["status"] for t in wait_tasks(api, small_id)} == {"completed"}
    api.post(f"/templates/sync-tasks/{mid_task}/retry").ok()
    (retried,) = wait_tasks(api, mid_id)
    assert retried["status"] == "completed"
    view = receive_view(stack, "pve-node3", mid_task)
    # The retry resumed: only the bytes not verified before were sent again.
    assert view["resumed_from"] == verified
    assert view["received_bytes"] - at_failure["received_bytes"] == mid_image.stat().st_size - verified
    assert sha256(staging / view["staged_name"]) == sha256(mid_image)


@pytest.mark.mariadb
def test_coordinator_restart_mid_copy_loses_nothing(slow_stack: Stack, slow_api: Api, tmp_path: Path) -> None:
    api, stack = slow_api, slow_stack
    template_id, image = local_template(api, stack, tmp_path, "restart", 96)
    size = image.stat().st_size
    task_ids = start_sync(api, stack, template_id, "pve-node2", "pve-node3")
    wait_task(api, task_ids[0], lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.25)
    restart_coordinator(stack)
    tasks = wait_tasks(api, template_id, timeout=180)
    assert [t["status"] for t in tasks] == ["completed", "completed"], tasks
    for task in tasks:
        node = task["target_node"]["node_name"]
        assert sha256(received_copy(stack, node, task["task_id"])) == guest_sha256(image)
        assert_template_copy(stack, node, task["vmid"], image, "raw")
    assert api.get("/templates/sync-tasks?status=syncing").ok()["total"] == 0


def _log_tails(stack: Stack) -> dict[str, int]:
    return {node: (stack.base / "logs" / f"agent-{node}.log").stat().st_size for node in stack.agents}


def _logged_since(stack: Stack, since: dict[str, int]) -> str:
    text = ""
    for node, offset in since.items():
        with open(stack.base / "logs" / f"agent-{node}.log", errors="replace") as f:
            f.seek(offset)
            text += f.read()
    return text


def test_a_canceled_sync_and_a_killed_peer_log_one_line_each(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    """Peers that go away are expected: each says so in one line, without a traceback."""
    api, stack = slow_api, slow_stack
    template_id, image = local_template(api, stack, tmp_path, "quiet", 96)
    size = image.stat().st_size
    since = _log_tails(stack)
    relay, last = start_sync(api, stack, template_id, "pve-node2", "pve-node3")
    wait_task(api, last, lambda t: t["bytes_done"] >= size * 0.2)
    # The relay's copy is canceled: its stream from the source and its own to node 3 stop.
    api.post(f"/templates/sync-tasks/{relay}/cancel").ok()
    gave_up = f"giving up on pve-node2 (task {relay}): 409 session_superseded"
    wait_for(lambda: gave_up in _logged_since(stack, since), timeout=30, what="node 1 giving up on node 2")
    wait_task(api, last, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.5)
    # The source dies mid-stream (node 3 is left with half a stream), and comes back.
    stack.agents["pve-node1"].signal(signal.SIGKILL)
    stack.agents["pve-node1"].stop()
    stack.start_agent("pve-node1")
    task = wait_task(api, last, lambda t: t["status"] in ("completed", "failed"))
    assert task["status"] == "completed", task
    assert sha256(received_copy(stack, "pve-node3", last)) == guest_sha256(image)

    logged = _logged_since(stack, since)
    assert "Traceback" not in logged and "Task exception was never retrieved" not in logged, logged
    assert "Error handling request" not in logged, logged
    assert f"task {last}: the stream from 127.0.0.1 broke off" in logged, logged

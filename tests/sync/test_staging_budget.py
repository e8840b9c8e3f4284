"""Staging within a budget: pve-node2 keeps at most 5 MiB of staged copies.

Copies no work needs are evicted least recently used first, the coordinator stops counting
them as sources, and every sync still completes bit-identical; a copy a running sync sends
from is never evicted.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateSyncTask
from demo.stack import Stack
from tests.conftest import own_stack
from tests.support.api import Api
from tests.support.db import with_session
from tests.support.images import MiB, raw_with_data
from tests.support.syncs import agent_get, guest_sha256, received_copy, sha256, wait_task
from tests.support.uploads import node_ids, staging_dir, storage_id, upload, wait_import
from tests.sync.test_scenarios import assert_template_copy

BUDGET_NODE = "pve-node2"
# Slow enough that a send from pve-node2 lasts seconds (2 MiB: 4 s), so it can be watched.
NODE2_SEND_RATE = 512 << 10


@pytest.fixture(scope="module", params=["sqlite"])
def budget_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield own_stack(
        request,
        tmp_path_factory,
        "budget",
        node_agent_settings={BUDGET_NODE: {"staging_budget": "5M", "max_send_rate": NODE2_SEND_RATE}},
    )


@pytest.fixture(scope="module")
def budget_api(budget_stack: Stack) -> Api:
    return Api(budget_stack.api, budget_stack.admin_token)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's images: a later test syncs an image an earlier one made (a test's own
    tmp_path goes when it passes)."""
    return tmp_path_factory.mktemp("budget-images")


class Templates:
    """The module's templates, by name: (template id, image, sync task to pve-node2)."""

    made: dict[str, tuple[int, Path]] = {}
    to_node2: dict[str, int] = {}


def local_template(api: Api, stack: Stack, tmp_path: Path, name: str, mib: int, node: str, seed: int) -> int:
    image = raw_with_data(tmp_path / f"{name}.raw", mib, mib, seed=seed)
    data = upload(api, stack, image, f"{name}-{secrets.token_hex(3)}", storage_id(api, stack, "local", node))
    template_id = int(data.ok()["template_id"])
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    Templates.made[name] = (template_id, image)
    return template_id


def sync_to(api: Api, stack: Stack, template_id: int, node: str) -> int:
    started = api.post(
        f"/templates/{template_id}/sync", json={"target_node_ids": [node_ids(api, stack)[node]]}
    )
    (task,) = started.ok()["sync_tasks"]
    return int(task["task_id"])


def wait_done(api: Api, task_id: int) -> dict[str, object]:
    task = wait_task(api, task_id, lambda t: t["status"] in ("completed", "failed", "canceled"), timeout=60)
    assert task["status"] == "completed", task
    return task


def staged_names(stack: Stack, node: str) -> set[str]:
    return {p.name for p in staging_dir(stack, node).iterdir() if p.is_file()}


def log_lines(stack: Stack, containing: str) -> list[str]:
    """The lines of pve-node2's agent log that contain ``containing``."""
    log = (stack.base / "logs" / f"agent-{BUDGET_NODE}.log").read_text()
    return [line for line in log.splitlines() if containing in line]


def counted_copy(stack: Stack, task_id: int) -> str:
    """The staged copy the coordinator counts for a completed sync task ("" if none)."""

    async def work(session: AsyncSession) -> str:
        return str(
            await session.scalar(select(TemplateSyncTask.staged_name).where(TemplateSyncTask.id == task_id))
        )

    return with_session(stack.database_url, work)


def test_the_least_recently_used_copy_goes_and_every_sync_completes(
    budget_stack: Stack, budget_api: Api, image_dir: Path
) -> None:
    api, stack = budget_api, budget_stack
    for i, name in enumerate(("first", "second", "third"), start=1):
        template_id = local_template(api, stack, image_dir, name, 2, "pve-node1", seed=i)
        task_id = sync_to(api, stack, template_id, BUDGET_NODE)
        task = wait_done(api, task_id)
        Templates.to_node2[name] = task_id
        assert_template_copy(stack, BUDGET_NODE, int(str(task["vmid"])), Templates.made[name][1], "raw")

    # Two copies of 2 MiB fit in 5 MiB: the third one's room came from the first, used longest ago.
    first, second, third = (Templates.to_node2[n] for n in ("first", "second", "third"))
    on_disk = staged_names(stack, BUDGET_NODE)
    assert not any(n.startswith(f"sync-{first}-") for n in on_disk), on_disk
    for name in ("second", "third"):
        assert sha256(received_copy(stack, BUDGET_NODE, Templates.to_node2[name])) == guest_sha256(
            Templates.made[name][1]
        )
    evicted = log_lines(stack, "evicted staged copy")
    assert len(evicted) == 1 and f"sync-{first}-" in evicted[0], evicted
    assert f"{2 * MiB} bytes" in evicted[0] and f"room for {2 * MiB} bytes of sync task {third}" in evicted[0]
    health = agent_get(stack, BUDGET_NODE, "/health").json()["staging"]
    assert health["budget_bytes"] == 5 * MiB and 4 * MiB <= health["used_bytes"] <= 5 * MiB, health
    # The coordinator no longer counts pve-node2 as holding the first image: never its source.
    assert counted_copy(stack, first) == ""
    assert counted_copy(stack, second).startswith(f"sync-{second}-")


def test_a_copy_a_sync_sends_from_is_not_evicted(
    budget_stack: Stack, budget_api: Api, image_dir: Path
) -> None:
    api, stack = budget_api, budget_stack
    if "second" not in Templates.to_node2:
        pytest.skip("needs the copies of the test before")
    second_task = Templates.to_node2["second"]
    third_task = Templates.to_node2["third"]
    template_id, image = Templates.made["second"]
    # pve-node1 (the import node) stops: pve-node2's copy is the only live source of "second".
    stack.agents["pve-node1"].stop()
    try:
        task_id = sync_to(api, stack, template_id, "pve-node3")
        # (The send takes 4 s; one 2 MiB chunk, so bytes_done says nothing until the end.)
        seen = wait_task(api, task_id, lambda t: t["status"] != "pending", timeout=30)
        assert seen["status"] == "syncing", seen
        # Meanwhile a 4 MiB upload into pve-node2's staging wants 3 MiB more than the budget.
        local_template(api, stack, image_dir, "fourth", 4, BUDGET_NODE, seed=4)
        task = wait_done(api, task_id)
    finally:
        stack.start_agent("pve-node1")
    assert task["source_node"] == {"node_id": node_ids(api, stack)["pve-node2"], "node_name": "pve-node2"}
    assert_template_copy(stack, "pve-node3", int(str(task["vmid"])), image, "raw")
    evicted = log_lines(stack, "evicted staged copy")
    # The third image's copy went (pve-node1 holds it); the second's stayed while it was sent.
    # (On a loaded machine the upload may make its room only after the send ended, while
    # pve-node3 imports: no work needs the copy then, and evicting it is right. The send ended
    # when pve-node3 had every byte verified, its log's "received" line; log times are whole
    # seconds, UTC "...Z": an eviction in that second is not a refusal.)
    assert any(f"sync-{third_task}-" in line for line in evicted), evicted
    target_log = (stack.base / "logs" / "agent-pve-node3.log").read_text().splitlines()
    received = [line[:20] for line in target_log if f"task {task_id}: received " in line]
    assert received, f"pve-node3 never said it received task {task_id}"
    while_sent = [line for line in evicted if f"sync-{second_task}-" in line and line[:20] < received[-1]]
    assert not while_sent, (received[-1], while_sent)
    assert log_lines(stack, "no other copy may go now")


def test_the_last_copy_of_a_template_is_kept_past_the_budget(
    budget_stack: Stack, budget_api: Api, image_dir: Path
) -> None:
    api, stack = budget_api, budget_stack
    if "fourth" not in Templates.made:
        pytest.skip("needs the upload of the test before")
    # pve-node2 holds the only copy of "fourth" (its upload; PVE's disk is not exported back):
    # a copy arriving past the budget must not take it.
    template_id = local_template(api, stack, image_dir, "fifth", 2, "pve-node1", seed=5)
    task = wait_done(api, sync_to(api, stack, template_id, BUDGET_NODE))
    assert_template_copy(stack, BUDGET_NODE, int(str(task["vmid"])), Templates.made["fifth"][1], "raw")
    kept = log_lines(stack, "kept: it is the last staged copy")
    assert kept and "upload-" in kept[0], kept
    assert any(n.startswith("upload-") for n in staged_names(stack, BUDGET_NODE))

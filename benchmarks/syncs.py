"""A sync the way a user drives it: upload (waiting for the import), POST .../sync, wait for
the sync tasks, cascade delete; plus what the benchmarks need to watch it (agent connections,
the staged images on disk)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.multipart import post_file
from benchmarks.receives import AgentConnection
from benchmarks.stack import Api, ApiError
from demo.stack import Stack

SYNC_DONE = "completed"
SYNC_BROKEN = ("failed", "canceled")


def upload_template(stack: Stack, storage_id: int, image: Path, name: str, timeout: float = 3600) -> int:
    """Upload ``image`` with wait=true (the answer comes after the import); the template id."""
    fields = {
        "template_name": name,
        "cluster_id": str(stack.cluster_id),
        "storage_id": str(storage_id),
        "description": "pvesphere sync benchmark",
        "wait": "true",
    }
    reply = post_file(stack.api + "/templates/upload", stack.admin_token, fields, image, timeout=timeout)
    data = reply.body.get("data") if isinstance(reply.body, dict) else None
    if reply.status != 200 or not isinstance(data, dict) or data.get("status") != "imported":
        raise ApiError(f"upload of {image.name} did not end imported: HTTP {reply.status}: {reply.body}")
    return int(data["template_id"])


def start_sync(api: Api, template_id: int, targets: dict[str, int]) -> dict[str, int]:
    """POST /templates/{id}/sync to the nodes ``targets`` (name -> node id); the task id per node."""
    body = {"target_node_ids": list(targets.values())}
    data = api.call("POST", f"/templates/{template_id}/sync", json=body)
    if data["skipped"]:
        raise ApiError(f"sync of template {template_id} skipped nodes: {data['skipped']}")
    return {str(t["target_node_name"]): int(t["task_id"]) for t in data["sync_tasks"]}


def wait_synced(api: Api, task_ids: list[int], timeout: float) -> None:
    """Until every task is completed (copied and imported on its target)."""
    deadline = time.monotonic() + timeout
    for task_id in task_ids:
        while True:
            task = api.call("GET", f"/templates/sync-tasks/{task_id}")
            if task["status"] == SYNC_DONE:
                break
            if task["status"] in SYNC_BROKEN:
                raise ApiError(f"sync task {task_id} {task['status']}: {task['error_message']}")
            if time.monotonic() > deadline:
                raise ApiError(f"sync task {task_id} not completed after {timeout:.0f}s: {task}")
            time.sleep(0.2)


def agent_connections(stack: Stack) -> dict[str, AgentConnection]:
    """A kept-alive connection to every node's agent, with that node's credential."""
    return {
        node: AgentConnection(stack.agent_url(node), stack.agent_credential(node), stack.ca_file)
        for node in stack.node_names()
    }


def staging_dir(stack: Stack, node: str) -> Path:
    return stack.base / "agents" / node / "staging"


def staged_images(stack: Stack, node: str) -> list[Path]:
    """Images (whole or partial) in a node's staging directory."""
    folder = staging_dir(stack, node)
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def remove_leftovers(stack: Stack) -> list[str]:
    """The cascade delete should leave every staging directory empty; remove and name what is left."""
    left = []
    for node in stack.node_names():
        for path in staged_images(stack, node):
            left.append(f"{node}/{path.name}")
            path.unlink()
    return left

"""The whole system on loopback for a benchmark (demo.stack on free ports), its REST API,
and the data plane its agents stream images on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from demo.stack import Stack, StackSettings, free_port, http_json, port_is_free

# Image bytes between agents: over TLS (the default), and in the clear (data_plane
# "insecure"); the sync benchmarks measure both.
DATA_PLANES = ("tls", "insecure")


class ApiError(RuntimeError):
    pass


def use_data_plane(stack: Stack, plane: str, timeout: float = 60) -> None:
    """Restart the coordinator with ``data_plane = plane``; back once every agent has heard
    of it (its next heartbeat)."""
    assert stack.coordinator is not None
    stack.coordinator.stop()
    stack.s.coordinator_settings["data_plane"] = plane
    stack.write_coordinator_config()
    stack.start_coordinator()
    deadline = time.monotonic() + timeout
    for node in stack.node_names():
        while True:
            status, health = http_json("GET", stack.agent_url(node) + "/health", ca_file=stack.ca_file)
            if status == 200 and health["transfers"]["data_plane"] == plane:
                break
            if time.monotonic() > deadline:
                raise ApiError(f"{node}'s agent not on data plane {plane} after {timeout:.0f}s: {health}")
            time.sleep(0.5)
    stack.wait_ready()


def start_stack(base: Path, staging_dirs: dict[str, Path] | None = None) -> Stack:
    """Emulator, 3 agents and the coordinator (SQLite) on free loopback ports, logs in ``base/logs``;
    ``staging_dirs``: nodes whose agents stage elsewhere than in ``base``."""
    settings = StackSettings(
        base_dir=base,
        coordinator_port=free_port(),
        coordinator_tls_port=free_port(),
        emulator_port=free_port(),
        first_agent_port=free_port(),
        node_agent_settings={node: {"staging_dir": str(path)} for node, path in (staging_dirs or {}).items()},
    )
    # Agent ports are consecutive from first_agent_port: find a free run.
    while not all(port_is_free(settings.first_agent_port + i) for i in range(settings.nodes)):
        settings.first_agent_port = free_port()
    stack = Stack(settings)
    stack.start()
    return stack


class Api:
    """The coordinator's API with the stack's admin token; ``call`` returns the envelope's data."""

    def __init__(self, stack: Stack) -> None:
        self.base = stack.api
        self.token = stack.admin_token
        self.cluster_id = stack.cluster_id

    def call(
        self, method: str, path: str, timeout: float = 60, ok: tuple[int, ...] = (200,), json: Any = None
    ) -> Any:
        status, body = http_json(method, self.base + path, self.token, body=json, timeout=timeout)
        if status not in ok:
            raise ApiError(f"{method} {path}: HTTP {status}: {body}")
        return body.get("data") if isinstance(body, dict) else body

    def node_id(self, node_name: str) -> int:
        nodes = self.call("GET", f"/nodes?cluster_id={self.cluster_id}&page_size=100")["list"]
        for node in nodes:
            if node["node_name"] == node_name:
                return int(node["id"])
        raise ApiError(f"no node {node_name!r} in cluster {self.cluster_id}")

    def storage_id(self, node_id: int, storage_name: str) -> int:
        storages = self.call("GET", f"/storages?node_id={node_id}&page_size=100")["list"]
        for storage in storages:
            if storage["storage_name"] == storage_name:
                return int(storage["id"])
        raise ApiError(f"no storage {storage_name!r} on node {node_id}")

    def wait_import(self, template_id: int, timeout: float) -> dict[str, Any]:
        """Poll the template's detail until its upload is imported or failed; returns upload_info."""
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = self.call("GET", f"/templates/{template_id}/detail")["upload_info"]
            if info["status"] in ("imported", "failed"):
                return info
            if time.monotonic() > deadline:
                raise ApiError(f"template {template_id}: import not finished after {timeout:.0f}s: {info}")
            time.sleep(0.3)

    def delete_cascade(self, template_id: int, timeout: float = 120) -> None:
        """DELETE ?cascade=true: the VM, the stored images and the staged file; retried while busy (409)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = http_json(
                "DELETE", f"{self.base}/templates/{template_id}?cascade=true", self.token, timeout=timeout
            )
            if status == 200:
                return
            if status != 409 or time.monotonic() > deadline:
                raise ApiError(f"cascade delete of template {template_id}: HTTP {status}: {body}")
            time.sleep(0.5)

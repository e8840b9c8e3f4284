"""Watching sync tasks from outside: the API, the agents' own view, the copies on disk."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import requests
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.agents.credentials import Credentials
from coordinator.agents.links import AgentLinks
from coordinator.db.models import TemplateSyncTask
from coordinator.db.session import create_engine, session_factory
from coordinator.jobs.cleanup import remove_failed_copies
from demo.stack import Stack
from tests.support.api import Api
from tests.support.db import with_session
from tests.support.uploads import staging_dir

SYNC_TIMEOUT = 120.0
TERMINAL = ("completed", "failed", "canceled")


def tasks_of(api: Api, template_id: int) -> list[dict[str, Any]]:
    return api.all("/templates/sync-tasks", template_id=template_id)


def wait_tasks(
    api: Api, template_id: int, statuses: tuple[str, ...] = TERMINAL, timeout: float = SYNC_TIMEOUT
) -> list[dict[str, Any]]:
    """Poll until every task of the template is in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = tasks_of(api, template_id)
        if tasks and all(t["status"] in statuses for t in tasks):
            return tasks
        assert time.monotonic() < deadline, f"sync tasks not {statuses} after {timeout}s: {tasks}"
        time.sleep(0.3)


def wait_task(api: Api, task_id: int, check: Any, timeout: float = SYNC_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = api.get(f"/templates/sync-tasks/{task_id}").ok()
        if check(task):
            return task  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"task {task_id} did not get there in {timeout}s: {task}"
        time.sleep(0.1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def guest_sha256(image: Path) -> str:
    """sha256 of what the guest sees of ``image`` (its raw conversion): what a sync's copy
    holds, whatever the uploaded file's format."""
    fmt = {".qcow2": "qcow2", ".vmdk": "vmdk"}.get(image.suffix, "raw")
    if fmt == "raw":
        return sha256(image)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "guest.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(out)], check=True, timeout=300
        )
        return sha256(out)


def agent_get(stack: Stack, node: str, path: str) -> requests.Response:
    """Call a node's agent with that node's credential (as the coordinator does)."""
    return requests.get(
        stack.agent_url(node) + path,
        headers={"Authorization": f"Bearer {stack.agent_credential(node)}"},
        timeout=10,
        verify=str(stack.ca_file),
    )


def task_uid(stack: Stack, task_id: int) -> str:
    """The uid agents key the task's receive by (not in the API: read from the database)."""

    async def work(session: AsyncSession) -> str:
        task = await session.get(TemplateSyncTask, task_id)
        assert task is not None, f"no sync task {task_id}"
        return task.uid

    return with_session(stack.database_url, work)


def receive_view(stack: Stack, node: str, task_id: int) -> dict[str, Any]:
    resp = agent_get(stack, node, f"/v1/receives/{task_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def received_copy(stack: Stack, node: str, task_id: int) -> Path:
    """The verified copy a sync task left in the target's staging directory."""
    name = receive_view(stack, node, task_id)["staged_name"]
    assert name, f"task {task_id} has no complete copy on {node}"
    return staging_dir(stack, node) / name


def partial_files(stack: Stack, node: str) -> list[str]:
    return sorted(p.name for p in staging_dir(stack, node).glob("*.part"))


class LoadSampler:
    """Samples every agent's running inbound/outbound streams until stopped; keeps the maxima."""

    def __init__(self, stack: Stack, every: float = 0.05) -> None:
        self.stack = stack
        self.every = every
        self.max_inbound: Counter[str] = Counter()
        self.max_outbound: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node in self.stack.node_names():
                try:
                    health = requests.get(
                        self.stack.agent_url(node) + "/health", timeout=2, verify=str(self.stack.ca_file)
                    ).json()
                except (requests.RequestException, ValueError):
                    continue
                transfers = health["transfers"]
                self.max_inbound[node] = max(self.max_inbound[node], transfers["inbound"])
                self.max_outbound[node] = max(self.max_outbound[node], transfers["outbound"])
            self.samples += 1
            self._stop.wait(self.every)


def run_cleanup(stack: Stack, older_than: timedelta) -> int:
    """The janitor's pass over failed and canceled copies, run as the coordinator runs it."""

    async def work() -> int:
        engine = create_engine(stack.database_url)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=stack.client_tls())) as http:
            links = AgentLinks(
                session_factory(engine), http, Credentials.from_file(stack.base / "agent-credential.key"), 15
            )
            try:
                return await remove_failed_copies(session_factory(engine), links, older_than)
            finally:
                await engine.dispose()

    return asyncio.run(work())

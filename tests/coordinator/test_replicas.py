"""Two coordinator replicas on one MariaDB, as real processes behind a load balancer.

Agents and users reach the replicas through a round-robin TCP balancer
(tests/support/proxies.py RoundRobin), as a deployment puts replicas behind one address.
Work spreads over both; the upload, import and per-node transfer limits hold across both
(they are rows of the database: coordinator/shared_limits.py); a replica killed with
SIGKILL mid-import or mid-sync leaves its work to the other once its leases expire.
MariaDB only: two hosts cannot share one SQLite file.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.db.models import Clone, LimitSlot, TemplateSyncTask, TemplateUpload
from coordinator.db.session import create_engine, session_factory
from coordinator.db.types import utcnow
from demo.stack import Proc, Stack, free_port
from tests.conftest import own_stack
from tests.support import images
from tests.support.api import Api
from tests.support.db import with_session
from tests.support.proxies import RoundRobin
from tests.support.syncs import guest_sha256, receive_view, received_copy, sha256, wait_task, wait_tasks
from tests.support.uploads import (
    emulator,
    importing_slowly,
    node_ids,
    rows_named,
    staged_files,
    stall_upload,
    storage_id,
    upload,
    upload_fields,
    wait_for,
    wait_import,
)
from tests.sync.test_faults import local_template, start_sync
from tests.sync.test_sigterm import assert_imported

MiB = images.MiB
LEASE = 5.0  # job_lease_seconds: how long a killed replica's jobs and slots stay its own
SEND_RATE = 6 << 20  # bytes/s per agent: a 48 MiB copy takes ~8 s
IMPORT_RATE = 1 << 20  # bytes/s for PVE's disk import: a 12 MiB disk takes ~12 s, past the takeover
SETTINGS = {
    "job_lease_seconds": LEASE,
    "max_concurrent_imports": 2,
    "max_concurrent_uploads": 4,
    "max_uploads_per_token": 2,
    "max_inbound_per_node": 1,
    "max_outbound_per_node": 1,
    "max_clones_per_node": 1,
    "heartbeat_interval": 1.0,
    "agent_timeout": 5.0,
}


@dataclasses.dataclass
class Replicas:
    stack: Stack
    tls_ports: dict[int, int]  # plain-HTTP port -> HTTPS port, per replica
    users: RoundRobin  # the balancer users reach the API through

    @property
    def ports(self) -> list[int]:
        return list(self.tls_ports)

    def proc(self, port: int) -> Proc:
        proc = self.stack.coordinator if port == self.stack.s.coordinator_port else self.stack.replicas[port]
        assert proc is not None
        return proc

    def api(self, port: int, token: str | None = None) -> Api:
        return Api(f"http://127.0.0.1:{port}/api/v1", token or self.stack.admin_token)

    def balanced_api(self, token: str | None = None) -> Api:
        """Through the balancer, on a new connection: the next replica in turn."""
        return self.api(self.users.port, token)

    def via(self, port: int) -> Stack:
        """The stack as a client of replica ``port`` sees it (for raw-socket uploads)."""
        view = copy.copy(self.stack)
        view.s = dataclasses.replace(self.stack.s, coordinator_port=port)
        return view

    def owner(self, lease_owner: str | None) -> int:
        """Which replica (its port) a lease owner (host:pid:random) is."""
        assert lease_owner, "the job is not leased"
        pid = int(lease_owner.split(":")[1])
        (port,) = [p for p in self.ports if self.proc(p).pid == pid]
        return port

    def restart(self, port: int) -> None:
        if port == self.stack.s.coordinator_port:
            self.stack.start_coordinator()
        else:
            self.stack.start_replica(port, self.tls_ports[port])

    def log_lines(self, port: int) -> list[str]:
        return self.proc(port).log_path.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module", params=["mariadb"])
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Replicas:
    ports = {free_port(): free_port(), free_port(): free_port()}
    (a, a_tls), (b, b_tls) = ports.items()
    agents_balancer = RoundRobin([a_tls, b_tls])  # TLS passes through: each replica's certificate
    request.addfinalizer(agents_balancer.close)
    stack = own_stack(
        request,
        tmp_path_factory,
        "replicas",
        coordinator_port=a,
        coordinator_tls_port=a_tls,
        agent_coordinator_url=f"https://127.0.0.1:{agents_balancer.port}",
        coordinator_settings=SETTINGS,
        agent_settings={"max_send_rate": SEND_RATE},
    )
    stack.start_replica(b, b_tls)
    users = RoundRobin([a, b])
    request.addfinalizer(users.close)
    return Replicas(stack, ports, users)


class Sampler:
    """Samples the database every 50 ms until stopped: the most imports running at once, the
    most sync tasks copying to one node and the most clones made on one node at once, over
    both replicas."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.max_importing = 0
        self.max_syncing_to: Counter[int] = Counter()
        self.max_cloning_on: Counter[int] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        engine = create_engine(self.url)
        db = session_factory(engine)
        try:
            while not self._stop.is_set():
                async with db() as session:
                    importing = await session.scalar(
                        select(func.count()).where(
                            TemplateUpload.status == "importing",
                            TemplateUpload.lease_expires_at >= utcnow(),
                        )
                    )
                    syncing = (
                        await session.execute(
                            select(TemplateSyncTask.target_node_id, func.count())
                            .where(TemplateSyncTask.status == "syncing")
                            .group_by(TemplateSyncTask.target_node_id)
                        )
                    ).all()
                    cloning = (
                        await session.execute(
                            select(Clone.node_id, func.count())
                            .where(Clone.status == "cloning")
                            .group_by(Clone.node_id)
                        )
                    ).all()
                self.max_importing = max(self.max_importing, int(importing or 0))
                for node_id, count in syncing:
                    self.max_syncing_to[node_id] = max(self.max_syncing_to[node_id], count)
                for node_id, count in cloning:
                    self.max_cloning_on[node_id] = max(self.max_cloning_on[node_id], count)
                self.samples += 1
                await asyncio.sleep(0.05)
        finally:
            await engine.dispose()


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _token(stack: Stack) -> str:
    result = stack.coordinator_cli("token", "create", "--name", _name("uploader"), "--role", "operator")
    return result.stdout.strip()


def _count(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


def _wait_logged(replicas: Replicas, port: int, text: str) -> None:
    """Once, in the log of replica ``port`` (written just after the row the API shows)."""
    wait_for(lambda: _count(replicas.log_lines(port), text) == 1, timeout=5, what=f"{port} logging {text!r}")


@pytest.mark.mariadb
def test_work_spreads_over_both_replicas_within_the_shared_limits(replicas: Replicas, tmp_path: Path) -> None:
    stack = replicas.stack
    api = replicas.api(replicas.ports[0])
    local = storage_id(api, stack, "local", "pve-node1")
    nodes = [node_ids(api, stack)[n] for n in ("pve-node2", "pve-node3")]
    before = {port: len(replicas.log_lines(port)) for port in replicas.ports}
    template_ids = []
    with Sampler(stack.database_url) as seen:
        for i in range(4):  # each on a new connection to the balancer: A, B, A, B
            image = images.raw_with_data(tmp_path / f"spread-{i}.raw", 1, 1, seed=i)
            sync = {"sync_node_ids": str(nodes[i % 2])}
            reply = upload(replicas.balanced_api(), stack, image, _name("spread"), local, **sync)
            template_ids.append(reply.ok()["template_id"])
        for template_id in template_ids:
            assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
            tasks = wait_tasks(api, template_id)
            assert [t["status"] for t in tasks] == ["completed"], tasks
    print(
        f"{seen.samples} samples: {seen.max_importing} import(s), {dict(seen.max_syncing_to)} copies per node"
    )
    assert seen.max_importing <= 2  # max_concurrent_imports, over both replicas
    assert max(seen.max_syncing_to.values()) == 1  # max_inbound_per_node, over both replicas

    def done_by() -> dict[int, tuple[int, int, int]]:
        """(uploads, imports, syncs) each replica logged in this test."""
        done = {}
        for port in replicas.ports:
            lines = replicas.log_lines(port)[before[port] :]
            done[port] = (
                _count(lines, "streaming to"),
                _count(lines, "imported as VM"),
                _count(lines, "has the template as VM"),
            )
        return done

    # The log lines follow the rows the API shows by a moment.
    wait_for(lambda: [sum(d[i] for d in done_by().values()) for i in range(3)] == [4, 4, 4], timeout=5)
    done = done_by()
    print("uploads, imports, syncs per replica:", done)
    assert [d[0] for d in done.values()] == [2, 2], done  # the balancer alternated
    assert all(imports + syncs > 0 for _, imports, syncs in done.values()), done


@pytest.mark.mariadb
def test_a_nodes_clone_limit_holds_across_replicas(replicas: Replicas, tmp_path: Path) -> None:
    """Full clones asked for through both replicas at once: one at a time on the node
    (max_clones_per_node 1), each its own VMID, all made."""
    stack = replicas.stack
    api = replicas.api(replicas.ports[0])
    image = images.raw_with_data(tmp_path / "clone-src.raw", 16, 12)
    lvm = storage_id(api, stack, "local-lvm", "pve-node1")
    template_id = upload(api, stack, image, _name("clone-src"), lvm).ok()["template_id"]
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    node = node_ids(api, stack)["pve-node1"]
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 4 << 20})  # ~3 s a clone
    try:
        with Sampler(stack.database_url) as seen:
            ids = [
                replicas.balanced_api()
                .post(
                    f"/templates/{template_id}/clone",
                    json={"node_id": node, "name": _name("lim"), "full": True},
                )
                .ok()["clone_id"]
                for _ in range(3)
            ]

            def ended() -> list[dict[str, object]] | None:
                views = [api.get(f"/clones/{i}").ok() for i in ids]
                return views if all(v["status"] in ("completed", "failed") for v in views) else None

            views = wait_for(ended, 120, "the clones ended")
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    print(f"{seen.samples} samples: {dict(seen.max_cloning_on)} clones per node at once")
    assert [v["status"] for v in views] == ["completed"] * 3, views
    assert len({v["vmid"] for v in views}) == 3
    assert seen.max_cloning_on[node] == 1  # max_clones_per_node, over both replicas


@pytest.mark.mariadb
def test_a_tokens_upload_limit_holds_across_replicas(replicas: Replicas, tmp_path: Path) -> None:
    stack = replicas.stack
    token = _token(stack)
    a, b = replicas.ports
    ceph = storage_id(replicas.api(a), stack, "ceph-storage")
    staged = staged_files(stack)
    held = [
        stall_upload(
            replicas.via(port),
            token,
            upload_fields(stack, _name("held"), ceph),
            "h.raw",
            b"\0" * MiB,
            64 * MiB,
        )
        for port in (a, b)
    ]
    image = images.qcow2(tmp_path / "third.qcow2", size_mib=16, data_mib=1)
    try:
        wait_for(lambda: len(staged_files(stack) - staged) == 2, what="both uploads streaming")
        for port in (a, b):  # one on each replica: the token's two, wherever the third goes
            third = upload(replicas.api(port, token), stack, image, _name("third"), ceph)
            assert third.status == 429, third.body
            assert third.error == "too_many_uploads_for_token"
    finally:
        for client in held:
            client.cut()

    def slots_free() -> bool:
        held_now = with_session(
            stack.database_url,
            lambda s: s.scalar(select(func.count()).where(LimitSlot.scope.like("upload%"))),
        )
        return held_now == 0

    wait_for(slots_free, what="the cut uploads' slots given back")
    assert upload(replicas.api(b, token), stack, image, _name("after"), ceph).ok()["status"] == "uploaded"


def _kill_owner(replicas: Replicas, lease_owner: str | None) -> tuple[int, int, float]:
    """SIGKILL the replica owning the lease: (its port, the survivor's port, when)."""
    victim = replicas.owner(lease_owner)
    (survivor,) = [p for p in replicas.ports if p != victim]
    replicas.proc(victim).kill()
    return victim, survivor, time.monotonic()


def _taken_over(replicas: Replicas, lease_owner: Callable[[], str | None], survivor: int) -> float:
    """When (time.monotonic()) the survivor holds the job's lease."""
    wait_for(
        lambda: (owner := lease_owner()) is not None and replicas.owner(owner) == survivor,
        timeout=LEASE + 10,
        what="the survivor taking the job over",
    )
    return time.monotonic()


@pytest.mark.mariadb
def test_a_killed_replicas_import_is_finished_by_the_other(replicas: Replicas, tmp_path: Path) -> None:
    stack = replicas.stack
    image = images.raw_with_data(tmp_path / "killed-import.raw", 12, 12, seed=8)
    name = _name("killed-import")
    victim = 0
    try:
        template_id, vmid = importing_slowly(
            replicas.balanced_api(), stack, image, name, "pve-node1", IMPORT_RATE
        )
        (row,) = rows_named(stack, name).uploads
        victim, survivor, killed = _kill_owner(replicas, row.lease_owner)
        took_over = _taken_over(replicas, lambda: rows_named(stack, name).uploads[0].lease_owner, survivor)
        info = wait_import(replicas.api(survivor), template_id)["upload_info"]
        print(
            f"import: taken over {took_over - killed:.1f} s after the SIGKILL (lease {LEASE:g} s), "
            f"imported {time.monotonic() - killed:.1f} s after it"
        )
        assert info["status"] == "imported" and info["vmid"] == vmid, info
        assert_imported(stack, name, "pve-node1", vmid, image, ["OK"])  # once: nothing done twice
        _wait_logged(replicas, survivor, f"upload {row.id}: imported as VM {vmid}")
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
        if victim:
            replicas.restart(victim)


@pytest.mark.mariadb
def test_a_killed_replicas_sync_is_finished_by_the_other(replicas: Replicas, tmp_path: Path) -> None:
    stack = replicas.stack
    api = replicas.balanced_api()
    template_id, image = local_template(api, stack, tmp_path, "killed-sync", 48)
    size = image.stat().st_size
    (task_id,) = start_sync(api, stack, template_id, "pve-node2")
    wait_task(api, task_id, lambda t: t["status"] == "syncing" and t["bytes_done"] >= size * 0.1)

    async def lease_owner(session) -> str | None:  # type: ignore[no-untyped-def]
        task = await session.get(TemplateSyncTask, task_id)
        return task.lease_owner if task else None

    def owner() -> str | None:
        return with_session(stack.database_url, lease_owner)

    victim, survivor, killed = _kill_owner(replicas, wait_for(owner, what="a watcher on the task"))
    try:
        took_over = _taken_over(replicas, owner, survivor)
        (task,) = wait_tasks(replicas.api(survivor), template_id)
        print(
            f"sync: taken over {took_over - killed:.1f} s after the SIGKILL (lease {LEASE:g} s), "
            f"completed {time.monotonic() - killed:.1f} s after it"
        )
        assert (task["status"], task["attempts"]) == ("completed", 1), task
        assert sha256(received_copy(stack, "pve-node2", task_id)) == guest_sha256(image)
        assert receive_view(stack, "pve-node2", task_id)["received_bytes"] == size  # nothing sent twice
        _wait_logged(replicas, survivor, f"sync task {task_id}: pve-node2 has the template")
    finally:
        replicas.restart(victim)

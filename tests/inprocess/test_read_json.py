"""The hot reads (coordinator/db/fast_reads.py; on SQLite the sync tasks' JSON written by
the database, coordinator/db/json_select.py) answer the same JSON values as the API's
structs built from the ORM's objects and encoded by msgspec, on both databases: every
filter, first and later pages, a page past the last, one of each, 404s.

The expected answers are computed here from the ORM (filter, newest first, slice), apart
from the reads under test. The seed holds what a rewrite gets wrong: NULL times and vmids,
microseconds to drop, quotes, backslashes, control characters and non-ASCII text, two
templates, every finished status.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import pytest
from sqlalchemy import select, update

from coordinator.agents.registry import is_live
from coordinator.api.inventory_reads import AgentOut, ClusterOut, NodeOut, StorageOut
from coordinator.api.pagination import Page
from coordinator.api.sync_task_reads import NodeRef, SyncTaskOut
from coordinator.api.template_reads import InstanceOut, UploadInfo
from coordinator.api.templates import template_out
from coordinator.appkeys import CONFIG, DB
from coordinator.db.models import (
    Agent,
    PveCluster,
    PveNode,
    PveStorage,
    TemplateInstance,
    TemplateSyncTask,
    TemplateUpload,
    VmTemplate,
)
from coordinator.db.types import utcnow
from tests.conftest import own_database
from tests.support.inprocess import InProcess

STATUSES = ("completed", "failed", "canceled")
NAMES = ('json "quoted" \\ back/slash', "débian-12 \u2028 ☃")
ERRORS = (None, 'agent said "no"\n\ttab \x01 ctl \\ é \u2028', "plain")
TASKS = 37
T = TypeVar("T")
# What is tested is each database's own JSON functions: both run every test.
pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> InProcess:
    apps = InProcess(tmp_path_factory.mktemp(f"read-json-{request.param}"), own_database(request))
    apps.start()
    request.addfinalizer(apps.stop)
    apps.run(_seed(apps))
    return apps


async def _seed(apps: InProcess) -> None:
    async with apps.app[DB]() as session:
        nodes = (await session.scalars(select(PveNode).order_by(PveNode.id))).all()
        storage = await session.scalar(select(PveStorage).where(PveStorage.node_id == nodes[0].id).limit(1))
        assert storage is not None
        start = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
        for t, name in enumerate(NAMES):
            template = VmTemplate(cluster_id=apps.cluster_id, template_name=name, name_key=name, creator="t")
            session.add(template)
            await session.flush()
            upload = TemplateUpload(
                template_id=template.id,
                template_name=name,
                cluster_id=apps.cluster_id,
                storage_id=storage.id,
                storage_name=storage.storage_name,
                storage_type="dir",
                import_node_id=nodes[0].id,
                import_node_name=nodes[0].node_name,
                file_name="a.qcow2",
                status="imported",
            )
            session.add(upload)
            await session.flush()
            for i in range(TASKS):
                target = nodes[1 + i % (len(nodes) - 1)]
                when = start + timedelta(hours=t, seconds=i * 61, microseconds=i)
                session.add(
                    TemplateSyncTask(
                        template_id=template.id,
                        upload_id=upload.id,
                        cluster_id=apps.cluster_id,
                        source_node_id=nodes[0].id,
                        source_node_name=nodes[0].node_name,
                        target_node_id=target.id,
                        target_node_name=target.node_name,
                        storage_name=storage.storage_name,
                        status=STATUSES[i % 3],
                        progress=i % 101,
                        bytes_total=(1 << 40) + i,
                        bytes_done=i * 7,
                        rate_bytes_per_sec=i * 3,
                        attempts=i % 4,
                        vmid=None if i % 5 == 0 else 9000 + i,
                        sync_start_time=None if i % 4 == 0 else when,
                        sync_end_time=None if i % 3 == 0 else when + timedelta(seconds=9),
                        error_message=ERRORS[i % 3],
                        created_at=when,
                    )
                )
            await session.flush()
            task_id = await session.scalar(
                select(TemplateSyncTask.id).where(TemplateSyncTask.template_id == template.id).limit(1)
            )
            for n, node in enumerate(nodes):
                session.add(
                    TemplateInstance(
                        template_id=template.id,
                        upload_id=upload.id,
                        cluster_id=apps.cluster_id,
                        node_id=node.id,
                        node_name=node.node_name,
                        storage_id=storage.id,
                        storage_name=storage.storage_name,
                        vmid=None if n == 2 else 9000 + n,
                        status="available" if n == 0 else "syncing",
                        is_primary=n == 0,
                        sync_task_id=None if n == 0 else task_id,
                    )
                )
        now = utcnow()
        for n, node in enumerate(nodes[:2]):
            session.add(
                Agent(
                    cluster_name="pve-inprocess",
                    node_name=node.node_name,
                    node_id=node.id,
                    url=f"https://{node.node_name}:8006",
                    version="1.2.3",
                    started_at=now,
                    last_heartbeat_at=now,
                    stopped_at=now if n == 1 else None,
                    pve_ok=n == 0,
                    pve_error=None if n == 0 else 'pve said "no" \u00e9',
                    staging_free_bytes=1 << 40,
                )
            )
        await session.commit()


def _expected_tasks(apps: InProcess) -> list[SyncTaskOut]:
    """Every task as the API shows it, newest first, from the ORM's objects."""

    async def read() -> list[SyncTaskOut]:
        async with apps.app[DB]() as session:
            names = dict((await session.execute(select(VmTemplate.id, VmTemplate.template_name))).all())
            tasks = (
                await session.scalars(select(TemplateSyncTask).order_by(TemplateSyncTask.id.desc()))
            ).all()
        return [
            SyncTaskOut(
                task_id=t.id,
                template_id=t.template_id,
                version=t.version,
                template_name=names[t.template_id],
                source_node=NodeRef(node_id=t.source_node_id, node_name=t.source_node_name),
                target_node=NodeRef(node_id=t.target_node_id, node_name=t.target_node_name),
                storage_name=t.storage_name,
                status=t.status,
                progress=t.progress,
                sync_start_time=t.sync_start_time,
                sync_end_time=t.sync_end_time,
                error_message=t.error_message,
                bytes_total=t.bytes_total,
                bytes_done=t.bytes_done,
                bytes_sent=t.bytes_sent,
                bytes_reused=t.bytes_reused,
                rate_bytes_per_sec=t.rate_bytes_per_sec,
                attempts=t.attempts,
                vmid=t.vmid,
                created_at=t.created_at,
            )
            for t in tasks
        ]

    return apps.run(read())


def _as_api(value: Any) -> Any:
    """``value`` as the API's JSON values: msgspec's encoding, times in whole seconds."""

    def whole_seconds(obj: Any) -> Any:
        if isinstance(obj, datetime):
            return obj.replace(microsecond=0)
        if isinstance(obj, dict):
            return {k: whole_seconds(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [whole_seconds(v) for v in obj]
        return obj

    return json.loads(
        msgspec.json.encode(whole_seconds(msgspec.to_builtins(value, builtin_types=(datetime,))))
    )


def _answer(apps: InProcess, path: str) -> Any:
    reply = apps.api.get(path)
    return reply.status, reply.body


def test_every_sync_task_page_is_the_orm_answer(seeded: InProcess) -> None:
    everything = _expected_tasks(seeded)
    assert len(everything) == TASKS * len(NAMES)
    template_ids = sorted({t.template_id for t in everything})
    filters: list[dict[str, Any]] = [{}]
    filters += [{"template_id": t} for t in template_ids]
    filters += [{"status": s} for s in STATUSES]
    filters += [{"template_id": t, "status": s} for t in template_ids for s in STATUSES]
    filters.append({"template_id": 999999})  # no such template: total 0, empty list
    checked = 0
    for given in filters:
        matching = [t for t in everything if all(getattr(t, k) == v for k, v in given.items())]
        for page, page_size in ((1, 10), (2, 10), (3, 7), (2, 100), (1, 1), (40, 10), (1, 100)):
            query = "&".join(f"{k}={v}" for k, v in {**given, "page": page, "page_size": page_size}.items())
            status, body = _answer(seeded, f"/templates/sync-tasks?{query}")
            start = (page - 1) * page_size
            expected = Page(
                total=len(matching), page=page, page_size=page_size, list=matching[start : start + page_size]
            )
            assert status == 200, body
            want = _as_api(expected)
            for got_task, want_task in zip(body["data"]["list"], want["list"], strict=False):
                assert got_task == want_task, query
            assert body == {"code": 200, "message": "success", "data": want}, query
            checked += len(body["data"]["list"])
    assert checked > TASKS * len(NAMES)


def test_every_sync_task_alone_is_the_orm_answer(seeded: InProcess) -> None:
    for task in _expected_tasks(seeded):
        status, body = _answer(seeded, f"/templates/sync-tasks/{task.task_id}")
        assert status == 200, body
        assert body == {"code": 200, "message": "success", "data": _as_api(task)}
    status, body = _answer(seeded, "/templates/sync-tasks/999999")
    assert status == 404 and body["code"] == 404, body


def test_times_are_whole_seconds_with_a_zone(seeded: InProcess) -> None:
    task = seeded.api.get("/templates/sync-tasks?page_size=1").ok()["list"][0]
    assert task["created_at"].endswith("Z") and len(task["created_at"]) == len("2026-03-04T05:06:07Z")


def _build(shape: type[T], values: dict[str, Any]) -> T:
    return shape(**values)


def _same(apps: InProcess, path: str, expected: Any) -> None:
    status, body = _answer(apps, path)
    assert status == 200, body
    assert body == {"code": 200, "message": "success", "data": _as_api(expected)}, path


def _pages(apps: InProcess, path: str, everything: list[Any]) -> None:
    """Every page size and page of ``path`` (newest first), one past the last included."""
    joiner = "&" if "?" in path else "?"
    for page, page_size in ((1, 10), (1, 1), (2, 1), (3, 2), (50, 10)):
        start = (page - 1) * page_size
        expected = Page(
            total=len(everything), page=page, page_size=page_size, list=everything[start : start + page_size]
        )
        _same(apps, f"{path}{joiner}page={page}&page_size={page_size}", expected)


def test_templates_are_the_orm_answer(seeded: InProcess) -> None:
    async def read() -> tuple[list[Any], dict[int, list[InstanceOut]], dict[int | None, UploadInfo]]:
        async with seeded.app[DB]() as session:
            rows = (
                await session.execute(
                    select(VmTemplate, PveCluster.cluster_name)
                    .join(PveCluster, PveCluster.id == VmTemplate.cluster_id)
                    .order_by(VmTemplate.id.desc())
                )
            ).all()
            progress = dict(
                (await session.execute(select(TemplateSyncTask.id, TemplateSyncTask.progress))).all()
            )
            instances: dict[int, list[InstanceOut]] = {}
            for i in await session.scalars(
                select(TemplateInstance).order_by(
                    TemplateInstance.version.desc(),
                    TemplateInstance.is_primary.desc(),
                    TemplateInstance.node_name,
                    TemplateInstance.id,
                )
            ):
                instances.setdefault(i.template_id, []).append(
                    InstanceOut(
                        instance_id=i.id,
                        version=i.version,
                        node_id=i.node_id,
                        node_name=i.node_name,
                        vmid=i.vmid,
                        storage_name=i.storage_name,
                        status=i.status,
                        is_primary=i.is_primary,
                        sync_progress=progress[i.sync_task_id] if i.sync_task_id is not None else None,
                    )
                )
            current = {t.id: t.current_version for t, _ in rows}
            uploads = {
                u.template_id: _build(
                    UploadInfo,
                    {f: getattr(u, "id" if f == "upload_id" else f) for f in UploadInfo.__struct_fields__},
                )
                for u in await session.scalars(select(TemplateUpload).order_by(TemplateUpload.id))
                if u.template_id is not None and u.version == current.get(u.template_id)
            }
        return [template_out(t, name) for t, name in rows], instances, uploads

    templates, instances, uploads = seeded.run(read())
    _pages(seeded, "/templates", templates)
    _pages(seeded, f"/templates?cluster_id={seeded.cluster_id}", templates)
    _same(seeded, "/templates?name=back/slash", Page(total=1, page=1, page_size=10, list=templates[-1:]))
    for t in templates:
        _same(seeded, f"/templates/{t.id}", t)
        listed = instances[t.id]
        _same(
            seeded,
            f"/templates/{t.id}/instances",
            {
                "template_id": t.id,
                "template_name": t.template_name,
                "total": len(listed),
                "instances": listed,
            },
        )
        head = {
            f: getattr(t, f)
            for f in (
                "id",
                "template_name",
                "cluster_id",
                "cluster_name",
                "description",
                "status",
                "deletion",
                "current_version",
            )
        }
        _same(seeded, f"/templates/{t.id}/detail", {**head, "upload_info": uploads[t.id]})
        _same(
            seeded,
            f"/templates/{t.id}/detail?include_instances=true",
            {**head, "upload_info": uploads[t.id], "instances": listed},
        )
    for path in ("/templates/999999", "/templates/999999/instances", "/templates/999999/detail"):
        assert seeded.api.get(path).status == 404


def test_inventory_is_the_orm_answer(seeded: InProcess) -> None:
    timeout = timedelta(seconds=seeded.app[CONFIG].agent_timeout)

    async def beat() -> None:
        """The running agent's heartbeat, now: the module's earlier tests may have taken longer
        than agent_timeout since the seed (on a loaded machine they did)."""
        async with seeded.app[DB]() as session:
            await session.execute(
                update(Agent).where(Agent.stopped_at.is_(None)).values(last_heartbeat_at=utcnow())
            )
            await session.commit()

    seeded.run(beat())

    async def read() -> tuple[list[ClusterOut], list[NodeOut], list[StorageOut], list[AgentOut]]:
        async with seeded.app[DB]() as session:
            clusters = (await session.scalars(select(PveCluster).order_by(PveCluster.id.desc()))).all()
            nodes = (await session.scalars(select(PveNode).order_by(PveNode.id.desc()))).all()
            storages = (await session.scalars(select(PveStorage).order_by(PveStorage.id.desc()))).all()
            agents = (await session.scalars(select(Agent).order_by(Agent.id.desc()))).all()
        now = utcnow()
        node_of = {n.id: n for n in nodes}
        agent_of = {a.node_id: a for a in agents}
        cluster_name = {c.id: c.cluster_name for c in clusters}

        def cluster_out(c: PveCluster) -> ClusterOut:
            counts = {
                "node_count": sum(1 for n in nodes if n.cluster_id == c.id and n.status != "removed"),
                "storage_count": sum(1 for s in storages if s.cluster_id == c.id),
            }
            return _build(
                ClusterOut,
                {f: counts[f] if f in counts else getattr(c, f) for f in ClusterOut.__struct_fields__},
            )

        def node_out(n: PveNode) -> NodeOut:
            agent = agent_of.get(n.id)
            live = agent is not None and is_live(agent, now, timeout)
            return NodeOut(
                n.id, n.node_name, n.cluster_id, cluster_name[n.cluster_id], n.ip_address, n.status, live
            )

        def storage_out(s: PveStorage) -> StorageOut:
            fields = StorageOut.__struct_fields__
            return _build(
                StorageOut,
                {f: node_of[s.node_id].node_name if f == "node_name" else getattr(s, f) for f in fields},
            )

        def agent_out(a: Agent) -> AgentOut:
            extra = {
                "live": is_live(a, now, timeout),
                "cluster_id": node_of[a.node_id].cluster_id if a.node_id else None,
            }
            return _build(
                AgentOut, {f: extra[f] if f in extra else getattr(a, f) for f in AgentOut.__struct_fields__}
            )

        return (
            [cluster_out(c) for c in clusters],
            [node_out(n) for n in nodes],
            [storage_out(s) for s in storages],
            [agent_out(a) for a in agents],
        )

    clusters, nodes, storages, agents = seeded.run(read())
    assert any(a.live for a in agents) and not all(a.live for a in agents)
    for kind, everything in (
        ("clusters", clusters),
        ("nodes", nodes),
        ("storages", storages),
        ("agents", agents),
    ):
        _pages(seeded, f"/{kind}", everything)
        for item in everything:
            _same(seeded, f"/{kind}/{item.id}", item)
        assert seeded.api.get(f"/{kind}/999999").status == 404
    _pages(seeded, f"/nodes?cluster_id={seeded.cluster_id}", nodes)
    _pages(seeded, "/storages?shared=false", [s for s in storages if not s.shared])
    _pages(seeded, f"/storages?node_id={nodes[0].id}", [s for s in storages if s.node_id == nodes[0].id])
    _pages(seeded, "/agents?live=true", [a for a in agents if a.live])
    _pages(seeded, f"/agents?cluster_id={seeded.cluster_id}&live=false", [a for a in agents if not a.live])

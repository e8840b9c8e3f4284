"""The plan of a template made from a VM (coordinator/upload_plan.plan_from_vm) against a
migrated database: the VM's node is the import node (its staging holds the export), the
storage must be one that node sees, and a node of another cluster, another node's local
storage or a node without a live agent is refused naming it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.migrate import upgrade_to_head
from coordinator.db.models import Agent, PveCluster, PveNode, PveStorage
from coordinator.db.session import create_engine, session_factory
from coordinator.db.types import utcnow
from coordinator.errors import Invalid, NotFound, Unavailable
from coordinator.upload_plan import UploadPlan, plan_from_vm
from shared.error_slugs import ErrorSlug

TIMEOUT = timedelta(seconds=15)


@dataclass
class Inventory:
    cluster: int
    other_cluster: int
    nodes: dict[str, int]  # n1, n2 (live agents), n3 (agent silent), x1 (other cluster)
    storages: dict[str, int]  # local@n1, local@n2, ceph (shared, its row on n2)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Inventory]:
    """One migrated database with the inventory, for every test here (planning writes nothing)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('plan') / 'plan.db'}"
    upgrade_to_head(url)
    return url, asyncio.run(_fill(url))


async def _fill(url: str) -> Inventory:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        clusters = [
            PveCluster(cluster_name=n, api_url="https://pve", token_id="t", token_secret="s") for n in "ab"
        ]
        session.add_all(clusters)
        await session.flush()
        nodes = {
            name: PveNode(cluster_id=clusters[name == "x1"].id, node_name=name, status="online")
            for name in ("n1", "n2", "n3", "x1")
        }
        session.add_all(nodes.values())
        await session.flush()
        for name, node in nodes.items():
            beat = utcnow() - (timedelta(minutes=5) if name == "n3" else timedelta(seconds=1))
            cluster_name = "b" if name == "x1" else "a"
            session.add(
                Agent(
                    cluster_name=cluster_name,
                    node_name=name,
                    node_id=node.id,
                    url="https://x",
                    last_heartbeat_at=beat,
                )
            )
        storages: dict[str, PveStorage] = {}
        for name in ("n1", "n2", "n3"):
            for storage, kind, shared in (("local", "dir", False), ("ceph", "rbd", True)):
                storages[f"{storage}@{name}"] = PveStorage(
                    cluster_id=clusters[0].id,
                    node_id=nodes[name].id,
                    storage_name=storage,
                    type=kind,
                    content="images",
                    shared=shared,
                )
        session.add_all(storages.values())
        await session.commit()
        found = Inventory(
            clusters[0].id,
            clusters[1].id,
            {k: v.id for k, v in nodes.items()},
            {k: v.id for k, v in storages.items()},
        )
    await engine.dispose()
    return found


@pytest.fixture
async def db(inventory: tuple[str, Inventory]) -> AsyncIterator[tuple[AsyncSession, Inventory]]:
    url, found = inventory
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        yield session, found
    await engine.dispose()


async def _plan(session: AsyncSession, inv: Inventory, node: str, storage: str, **kw: object) -> UploadPlan:
    args: dict[str, object] = {
        "template_name": "t",
        "cluster_id": inv.cluster,
        "node_id": inv.nodes[node],
        "storage_id": inv.storages[storage],
        "sync_node_ids": [],
        "agent_timeout": TIMEOUT,
    }
    args.update(kw)
    return await plan_from_vm(session, **args)  # type: ignore[arg-type]


async def test_the_vms_node_imports_onto_its_own_or_a_shared_storage(
    db: tuple[AsyncSession, Inventory],
) -> None:
    session, inv = db
    plan = await _plan(session, inv, "n1", "local@n1", sync_node_ids=[inv.nodes["n2"]])
    assert plan.import_node.node_name == "n1"
    assert [t.node.node_name for t in plan.instance_targets] == ["n1"]
    assert [t.node.node_name for t in plan.sync_targets] == ["n2"]
    # The shared storage's row names n2; the VM is on n1, so n1 imports; every node holds it.
    plan = await _plan(session, inv, "n1", "ceph@n2")
    assert plan.import_node.node_name == "n1"
    assert sorted(t.node.node_name for t in plan.instance_targets) == ["n1", "n2", "n3"]


@pytest.mark.parametrize(
    ("node", "storage", "kw", "refusal", "slug", "says"),
    [
        ("x1", "local@n1", {}, Invalid, ErrorSlug.NODE_NOT_IN_CLUSTER, "x1"),
        ("n1", "local@n2", {}, Invalid, ErrorSlug.STORAGE_MISSING_ON_NODE, "another node than the VM's (n1)"),
        ("n3", "local@n3", {}, Unavailable, ErrorSlug.NO_LIVE_AGENT, "n3"),
        ("n1", "ceph@n1", {"sync_node_ids": [2]}, Invalid, ErrorSlug.SHARED_STORAGE_NO_SYNC, "shared"),
        ("n1", "local@n1", {"node_id": 999}, NotFound, ErrorSlug.NODE_NOT_FOUND, "node 999"),
        ("n1", "local@n1", {"cluster_id": 999}, NotFound, ErrorSlug.CLUSTER_NOT_FOUND, "cluster 999"),
    ],
)
async def test_what_cannot_work_is_refused_naming_it(
    db: tuple[AsyncSession, Inventory],
    node: str,
    storage: str,
    kw: dict[str, object],
    refusal: type[Exception],
    slug: ErrorSlug,
    says: str,
) -> None:
    session, inv = db
    with pytest.raises(refusal) as caught:
        await _plan(session, inv, node, storage, **kw)
    assert caught.value.error == slug  # type: ignore[attr-defined]
    assert says in caught.value.message  # type: ignore[attr-defined]

"""What the clone routes answer before any work (no agent needed): roles, a node of another
cluster, a template without an image, `/templates/resolve` not taken for `/templates/{id}`,
and nothing made by a refused request."""

from __future__ import annotations

import secrets

import pytest

from coordinator.appkeys import DB
from coordinator.db.models import Clone, PveCluster, PveNode
from coordinator.states.template import new_template
from tests.support.api import Api
from tests.support.inprocess import InProcess


def _rows(coordinator: InProcess) -> tuple[int, int, int]:
    """(a template of the registered cluster with no image, one of its nodes, a node of
    another cluster), made as rows."""

    async def make() -> tuple[int, int, int]:
        async with coordinator.app[DB]() as session:
            other = PveCluster(
                cluster_name=f"other-{secrets.token_hex(3)}",
                api_url="https://192.0.2.1:8006",
                token_id="t",
                token_secret="s",
            )
            session.add(other)
            await session.flush()
            foreign = PveNode(cluster_id=other.id, node_name="pve-far1", status="online")
            template = new_template(f"clone-req-{secrets.token_hex(3)}", cluster_id=coordinator.cluster_id)
            session.add_all([foreign, template])
            await session.flush()
            ours = await session.get(PveNode, 1)
            assert ours is not None and ours.cluster_id == coordinator.cluster_id
            await session.commit()
            return template.id, ours.id, foreign.id

    return coordinator.run(make())


def _clones(coordinator: InProcess) -> int:
    async def count() -> int:
        async with coordinator.app[DB]() as session:
            return len(list(await session.scalars(Clone.__table__.select())))

    return coordinator.run(count())


@pytest.mark.mariadb
def test_a_clone_is_refused_before_anything_is_made(coordinator: InProcess, api: Api) -> None:
    template_id, node, foreign = _rows(coordinator)
    before = _clones(coordinator)
    elsewhere = api.post(f"/templates/{template_id}/clone", json={"node_id": foreign, "name": "web-1"})
    assert elsewhere.status == 400 and elsewhere.error == "node_not_in_cluster", elsewhere.body
    assert elsewhere.data["fields"] == {"node_id": "not in the template's cluster"}
    no_image = api.post(f"/templates/{template_id}/clone", json={"node_id": node, "name": "web-1"})
    assert no_image.status == 409 and no_image.error == "no_image", no_image.body
    missing = api.post(f"/templates/{template_id}/clone", json={"name": "web-1"})
    assert missing.status == 400 and "node_id" in missing.data["fields"]
    assert _clones(coordinator) == before


def test_clones_need_an_operator_to_make_and_a_viewer_to_read(coordinator: InProcess, api: Api) -> None:
    template_id, node, _ = _rows(coordinator)
    viewer = api.as_token(coordinator.token("viewer"))
    refused = viewer.post(f"/templates/{template_id}/clone", json={"node_id": node, "name": "web-1"})
    assert refused.status == 403
    assert viewer.get("/clones").ok()["page"] == 1
    assert viewer.get("/clones/999999").error == "clone_not_found"
    assert api.as_token(None).get("/clones").status == 401


def test_resolve_is_its_own_route_not_a_template_id(coordinator: InProcess, api: Api) -> None:
    template_id, _, _ = _rows(coordinator)
    name = api.get(f"/templates/{template_id}").ok()["template_name"]
    query = {"cluster_id": coordinator.cluster_id, "name": name, "node": "pve-node1"}
    answer = api.get("/templates/resolve", params=query)
    assert answer.status == 404 and answer.error == "not_on_node", answer.body  # no copy there yet
    assert api.get("/templates/resolve", params={**query, "cluster_id": 999999}).error == "cluster_not_found"
    bad_node = api.get("/templates/resolve", params={**query, "node": "no such node"})
    assert bad_node.status == 400 and "node" in bad_node.data["fields"]

"""`pvesphere` options that name a node or a storage take its name as well as its id (the
README: "A cluster, a node or a storage is given by id or by name"), run in-process
(client.cli.main) against the in-process coordinator."""

from __future__ import annotations

import json
import secrets

import pytest

from client.cli import main
from coordinator.appkeys import DB
from coordinator.states.template import new_template
from tests.support.api import Api
from tests.support.inprocess import InProcess


def _run(coordinator: InProcess, *args: str) -> int:
    return main(["--url", coordinator.url, "--token", coordinator.admin_token, *args])


def _template_without_image(coordinator: InProcess) -> int:
    async def make() -> int:
        async with coordinator.app[DB]() as session:
            row = new_template(f"cli-names-{secrets.token_hex(3)}", cluster_id=coordinator.cluster_id)
            session.add(row)
            await session.commit()
            return row.id

    return coordinator.run(make())


def test_storages_of_a_node_given_by_name(
    coordinator_sqlite: InProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    api = coordinator_sqlite.api
    expected = api.get("/storages", params={"node_id": 1, "page_size": 100}).ok()["list"]
    node_name = expected[0]["node_name"]
    assert _run(coordinator_sqlite, "--json", "storages", "--node", node_name) == 0
    shown = json.loads(capsys.readouterr().out)["list"]
    assert [s["id"] for s in shown] == [s["id"] for s in expected]
    assert {s["node_name"] for s in shown} == {node_name}
    assert _run(coordinator_sqlite, "storages", "--node", "pve-nowhere") == 2
    assert "no node named 'pve-nowhere'" in capsys.readouterr().err


def test_clone_target_storage_by_name_or_id_reaches_the_api(
    coordinator_sqlite: InProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    api: Api = coordinator_sqlite.api
    template = str(_template_without_image(coordinator_sqlite))
    lvm = next(
        s
        for s in api.get("/storages", params={"node_id": 1, "page_size": 100}).ok()["list"]
        if s["type"] == "lvmthin"
    )
    clone = ("clone", template, "--node", "1", "--name", "db-1", "--full", "--target-storage")
    # The template has no image yet, so the API gets as far as saying that: the storage,
    # by name or by id (sent as its name), was a request the API accepted.
    for storage in (lvm["storage_name"], str(lvm["id"])):
        assert _run(coordinator_sqlite, *clone, storage) == 3
        err = capsys.readouterr().err
        assert "(no_image, HTTP 409)" in err, err
    assert _run(coordinator_sqlite, *clone, "999999") == 3
    assert "storage 999999 not found" in capsys.readouterr().err

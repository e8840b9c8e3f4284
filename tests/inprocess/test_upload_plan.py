"""What an upload answers before a byte moves (no agent needed): asking for a sync on a
shared storage, which every node already sees, is a 400 naming what was asked."""

from __future__ import annotations

import secrets

import pytest

from tests.support.api import Api
from tests.support.inprocess import InProcess


def _upload(coordinator: InProcess, api: Api, **fields: str) -> tuple[int, str, str]:
    shared = [s for s in api.all("/storages", cluster_id=coordinator.cluster_id) if s["shared"]]
    assert shared, "the emulator has a shared storage"
    data = {
        "template_name": f"shared-{secrets.token_hex(3)}",
        "cluster_id": str(coordinator.cluster_id),
        "storage_id": str(shared[0]["id"]),
        **fields,
    }
    files = {"file": ("disk.raw", b"\0" * 512, "application/octet-stream")}
    reply = api.post("/templates/upload", data=data, files=files)
    return reply.status, reply.error, reply.message


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"auto_sync": "true"}, "auto_sync"),
        ({"sync_node_ids": "2"}, "sync_node_ids"),
        ({"auto_sync": "true", "sync_node_ids": "2,3"}, "sync_node_ids and auto_sync"),
    ],
)
def test_a_sync_asked_for_on_a_shared_storage_is_a_400_naming_it(
    coordinator: InProcess, api: Api, fields: dict[str, str], named: str
) -> None:
    status, error, message = _upload(coordinator, api, **fields)
    assert (status, error) == (400, "shared_storage_no_sync"), message
    assert f"{named} do not apply" in message and "is shared" in message
    templates = api.all("/templates", cluster_id=coordinator.cluster_id)
    assert not [t for t in templates if t["template_name"].startswith("shared-")]  # nothing made

"""What POST /templates/from-volume answers before any agent is asked (no agent here): a
volume id that is not an import volume or a disk image, or is hostile, is a 400 naming
``volume``; the fields it shares with from-vm are checked as there; nothing is made."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.inprocess import InProcess


def _from_volume(coordinator: InProcess, api: Api, **fields: Any) -> tuple[Any, str]:
    local = [s for s in api.all("/storages", cluster_id=coordinator.cluster_id) if not s["shared"]]
    name = f"vol-{secrets.token_hex(3)}"
    body = {
        "cluster_id": coordinator.cluster_id,
        "node_id": local[0]["node_id"],
        "storage_id": local[0]["id"],
        "template_name": name,
        "volume": "local:import/debian-13.qcow2",
        **fields,
    }
    return api.post("/templates/from-volume", json={k: v for k, v in body.items() if v is not None}), name


@pytest.mark.parametrize(
    ("volume", "text"),
    [
        ("local:iso/debian-13.iso", "content type iso"),
        ("local:vztmpl/debian-13.tar.zst", "content type vztmpl"),
        ("local:snippets/user.yaml", "content type snippets"),
        ("local:import/../../etc/shadow.raw", "'..'"),
        ("local:/etc/shadow", "storage:import/<name>"),
        ("local:import/a.qcow2,import-from=/etc/shadow", "storage:import/<name>"),
        ("local:import/a.qcow2\n", "storage:import/<name>"),
        ("local:import/a\x00.qcow2", "storage:import/<name>"),
        ("local:import/a b.qcow2", "storage:import/<name>"),
        ("local:import/disk.ova", "storage:import/<name>"),
        ("local:100/vm-100-disk-0.qcow2;rm", "storage:import/<name>"),
        ("/var/lib/vz/import/a.qcow2", "storage:name"),
        ("-local:import/a.qcow2", "storage:name"),
        ("", "storage:name"),
        ("local:import/" + "a" * 600 + ".qcow2", "at most 500"),
    ],
)
def test_a_hostile_or_wrong_volume_id_is_a_400_naming_volume(
    coordinator: InProcess, api: Api, volume: str, text: str
) -> None:
    reply, name = _from_volume(coordinator, api, volume=volume)
    assert (reply.status, reply.error) == (400, "invalid_request"), reply.body
    assert text in reply.data["fields"]["volume"], reply.data
    assert not [
        t for t in api.all("/templates", cluster_id=coordinator.cluster_id) if t["template_name"] == name
    ]


@pytest.mark.parametrize(
    ("fields", "status", "slug", "named"),
    [
        ({"volume": None}, 400, "invalid_request", "volume"),
        ({"volume": 7}, 400, "invalid_request", "volume"),
        ({"template_name": None}, 400, "invalid_request", "template_name"),
        ({"storage_id": None}, 400, "invalid_request", "storage_id"),
        ({"vmid": 100}, 400, "invalid_request", "vmid"),
        ({"snapshot": "golden"}, 400, "invalid_request", "snapshot"),
        ({"template_id": 1}, 400, "invalid_request", "template_id"),
        ({"cluster_id": 999999}, 404, "cluster_not_found", "cluster 999999"),
        ({"node_id": 999999}, 404, "node_not_found", "node 999999"),
        ({"storage_id": 999999}, 404, "storage_not_found", "999999"),
        ({"vm_config": {"args": "-x"}}, 400, "invalid_request", "args"),
        # Everything else checks out: the node has no agent here to look at the volume (none,
        # or one another test registered at an address that does not answer).
        ({}, 503, "no_live_agent|agent_failed", "agent"),
    ],
)
def test_the_common_fields_are_checked_as_from_vms_and_nothing_is_made(
    coordinator: InProcess, api: Api, fields: dict[str, Any], status: int, slug: str, named: str
) -> None:
    reply, name = _from_volume(coordinator, api, **fields)
    assert reply.status == status and reply.error in slug.split("|"), reply.body
    assert named in reply.message, reply.message
    assert not [
        t for t in api.all("/templates", cluster_id=coordinator.cluster_id) if t["template_name"] == name
    ]

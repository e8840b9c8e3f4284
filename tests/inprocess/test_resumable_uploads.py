"""What a resumable (tus) upload answers before a byte moves (no agent needed): the same
checks as a multipart upload, each a 4xx naming its field or header, and nothing made."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from shared.tus import encode_metadata
from tests.support.api import Api, Reply
from tests.support.inprocess import InProcess

TUS = {"Tus-Resumable": "1.0.0"}


def _shared_storage(coordinator: InProcess, api: Api) -> int:
    shared = [s for s in api.all("/storages", cluster_id=coordinator.cluster_id) if s["shared"]]
    assert shared, "the emulator has a shared storage"
    return int(shared[0]["id"])


def _create(api: Api, metadata: dict[str, str], length: str | None = "1048576", **headers: str) -> Reply:
    sent = {**TUS, "Upload-Metadata": encode_metadata(metadata), **headers}
    if length is not None:
        sent["Upload-Length"] = length
    return api.post("/uploads", headers=sent)


def _fields(coordinator: InProcess, api: Api, **more: str) -> dict[str, str]:
    return {
        "filename": "disk.qcow2",
        "template_name": f"tus-{secrets.token_hex(3)}",
        "cluster_id": str(coordinator.cluster_id),
        "storage_id": str(_shared_storage(coordinator, api)),
        **more,
    }


def _nothing_made(coordinator: InProcess, api: Api) -> None:
    templates = api.all("/templates", cluster_id=coordinator.cluster_id)
    assert not [t for t in templates if t["template_name"].startswith("tus-")]


def test_options_says_what_the_server_supports(coordinator: InProcess, api: Api) -> None:
    reply = api.request("OPTIONS", "/uploads")
    assert reply.status == 204, reply.body
    assert reply.headers["Tus-Version"] == "1.0.0"
    assert set(reply.headers["Tus-Extension"].split(",")) == {"creation", "termination", "expiration"}
    assert int(reply.headers["Tus-Max-Size"]) > 0


def test_the_uploads_need_an_operator(coordinator: InProcess, api: Api) -> None:
    viewer = api.as_token(coordinator.token("viewer"))
    reply = _create(viewer, _fields(coordinator, api))
    assert reply.status == 403, reply.body
    assert api.as_token(None).request("HEAD", "/uploads/1", headers=TUS).status == 401
    _nothing_made(coordinator, api)


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        ({"headers": {"Tus-Resumable": "0.2.2"}}, 412, "Tus-Resumable"),
        ({"length": None}, 400, "Upload-Length"),
        ({"length": "-5"}, 400, "Upload-Length"),
        ({"length": "0"}, 400, "Upload-Length"),
        ({"length": str(1 << 50)}, 413, "exceeds the limit"),
        ({"headers": {"Upload-Defer-Length": "1"}}, 400, "Upload-Defer-Length"),
        ({"headers": {"Upload-Metadata": "filename ***"}}, 400, "Upload-Metadata"),
        ({"drop": "filename"}, 400, "filename"),
        ({"set": {"filename": "disk.iso"}}, 415, "iso"),
        ({"drop": "template_name"}, 400, "template_name"),
        ({"set": {"cluster_id": "abc"}}, 400, "cluster_id"),
        ({"set": {"storage_id": "987654"}}, 404, "987654"),
        ({"set": {"auto_sync": "true"}}, 400, "auto_sync"),
        ({"set": {"sync_node_ids": "x"}}, 400, "sync_node_ids"),
        ({"set": {"vm_config": '{"args": "-x"}'}}, 400, "vm_config"),
        ({"set": {"colour": "blue"}}, 400, "colour"),
        ({"set": {"wait": "true"}}, 400, "wait"),
        ({"set": {"template_id": "0"}}, 400, "template_id"),
        ({"set": {"template_id": "987654"}, "drop_all": True}, 404, "987654"),
    ],
)
def test_a_bad_creation_is_a_4xx_naming_what_and_makes_nothing(
    coordinator: InProcess, api: Api, change: dict[str, Any], status: int, named: str
) -> None:
    fields = {"filename": "disk.qcow2"} if change.get("drop_all") else _fields(coordinator, api)
    fields.pop(change.get("drop", ""), None)
    fields.update(change.get("set", {}))
    reply = _create(api, fields, change.get("length", "1048576"), **change.get("headers", {}))
    assert reply.status == status, reply.body
    assert named in reply.message, reply.message
    assert reply.headers.get("Tus-Resumable") == "1.0.0"
    _nothing_made(coordinator, api)


def test_a_valid_creation_without_a_live_agent_is_a_503_and_makes_nothing(
    coordinator: InProcess, api: Api
) -> None:
    reply = _create(api, _fields(coordinator, api))
    assert (reply.status, reply.error) == (503, "no_live_agent"), reply.body
    _nothing_made(coordinator, api)


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE"])
def test_an_unknown_upload_is_a_404(coordinator: InProcess, api: Api, method: str) -> None:
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    reply = api.request(method, "/uploads/987654", headers=headers, data=b"x")
    assert reply.status == 404
    assert reply.headers.get("Tus-Resumable") == "1.0.0"


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        ({"Content-Type": "application/octet-stream", "Upload-Offset": "0"}, 415, "offset+octet-stream"),
        ({"Content-Type": "application/offset+octet-stream"}, 400, "Upload-Offset"),
        ({"Content-Type": "application/offset+octet-stream", "Upload-Offset": "1e3"}, 400, "Upload-Offset"),
    ],
)
def test_a_malformed_patch_is_refused_before_the_upload_is_looked_up(
    coordinator: InProcess, api: Api, headers: dict[str, str], status: int, named: str
) -> None:
    reply = api.request("PATCH", "/uploads/987654", headers={**TUS, **headers}, data=b"x")
    assert reply.status == status, reply.body
    assert named in reply.message

"""Resumable uploads (tus) end to end, with the emulator and real agents: a PATCH cut off
mid-body keeps what arrived, HEAD says where to go on, a coordinator restart between PATCHes
changes nothing, the last byte imports the template (its disk identical to the image); a
wrong offset, termination and expiry leave nothing behind."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateUpload
from demo.stack import Stack
from tests.support import images, tus
from tests.support.api import Api
from tests.support.db import with_session
from tests.support.uploads import (
    expire_lease,
    rows_named,
    shared_volume,
    staged_files,
    storage_id,
    upload,
    wait_for,
    wait_import,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _upload_row(stack: Stack, upload_id: int) -> TemplateUpload:
    async def work(session: AsyncSession) -> TemplateUpload:
        row = await session.get(TemplateUpload, upload_id)
        assert row is not None
        return row

    return with_session(stack.database_url, work)


def _files_of(stack: Stack, upload_id: int) -> set[str]:
    return {f for f in staged_files(stack) if f.split("/", 1)[1].startswith(f"upload-{upload_id}-")}


def _nothing_left(stack: Stack, api: Api, upload_id: int, name: str) -> None:
    """A given-up upload: its bytes gone from the agent, its template row too (the name free
    again), HEAD answering 410."""
    assert _files_of(stack, upload_id) == set()
    assert rows_named(stack, name).templates == []
    assert api.request("HEAD", f"/uploads/{upload_id}", headers=tus.TUS).status == 410


@pytest.mark.mariadb
def test_a_cut_off_upload_resumes_across_restarts_and_imports_the_same_disk(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "resumed.qcow2", size_mib=32, data_mib=8, seed=11)
    data = image.read_bytes()
    name = _name("tus")
    upload_id, created = tus.create_on_ceph(stack, api, image, name)
    assert created.headers["Tus-Resumable"] == "1.0.0"
    expires = datetime.strptime(created.headers["Upload-Expires"], "%a, %d %b %Y %H:%M:%S GMT")
    assert expires.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=23)
    assert tus.offset(api, upload_id) == 0
    # Waiting for its PATCHes is not "a coordinator stopped while streaming": nobody's lease,
    # running out at the upload's expiry.
    row = _upload_row(stack, upload_id)
    assert (row.status, row.lease_owner) == ("uploading", None)

    # Half of the image announced, a third of it sent, then the connection reset.
    tus.cut_patch(stack, stack.admin_token, upload_id, 0, data[: len(data) // 3], claimed=len(data) // 2)
    held = wait_for(lambda: tus.offset(api, upload_id), timeout=30, what="the cut-off PATCH's bytes kept")
    assert 0 < held <= len(data) // 3

    # A PATCH at another offset is refused naming both; nothing is written.
    wrong = tus.patch(api, upload_id, held + 1, data[held + 1 :])
    assert (wrong.status, wrong.error) == (409, "bad_offset"), wrong.body
    assert str(held + 1) in wrong.message and str(held) in wrong.message
    assert tus.offset(api, upload_id) == held

    # The coordinator restarts between PATCHes: the upload is in the database and on the agent.
    assert stack.coordinator is not None
    stack.coordinator.stop()
    stack.start_coordinator()
    assert tus.offset(api, upload_id) == held

    middle = len(data) * 2 // 3
    reply = tus.patch(api, upload_id, held, data[held:middle])
    assert reply.status == 204, reply.body
    assert int(reply.headers["Upload-Offset"]) == middle
    # The import node's agent restarts between PATCHes: its partial file stays (an upload's
    # .part of an earlier run would go).
    node = row.import_node_name
    stack.agents[node].stop()
    stack.start_agent(node)
    assert tus.offset(api, upload_id) == middle
    reply = tus.patch(api, upload_id, middle, data[middle:])
    assert reply.status == 204, reply.body
    assert int(reply.headers["Upload-Offset"]) == len(data)
    assert tus.offset(api, upload_id) == len(data)  # (complete: HEAD says so)

    template_id = rows_named(stack, name).templates[0].id
    # What it became, as a multipart upload answers (the last PATCH's answer is a bare 204).
    became = api.get(f"/uploads/{upload_id}").ok()
    assert (became["template_id"], became["version"], became["upload_id"]) == (template_id, 1, upload_id)
    assert became["is_shared"] is True and became["sync_tasks"] == []
    d = wait_import(api, template_id)
    info = d["upload_info"]
    assert (info["status"], info["file_size"], info["file_name"]) == ("imported", len(data), "resumed.qcow2")
    disk = shared_volume(stack, "ceph-storage", f"base-{info['vmid']}-disk-0")
    same = images.compare(image, "qcow2", disk, "raw")
    assert same.returncode == 0, same.stdout + same.stderr
    assert not [f for f in _files_of(stack, upload_id) if f.endswith("-resumable")]


@pytest.mark.mariadb
def test_one_patch_at_a_time_and_termination_removes_the_bytes_and_the_template_row(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "ended.qcow2", size_mib=16, data_mib=2, seed=12)
    name = _name("tus-end")
    upload_id, created = tus.create_on_ceph(stack, api, image, name)
    data = image.read_bytes()
    assert tus.patch(api, upload_id, 0, data[:4096]).status == 204
    assert _files_of(stack, upload_id)

    # One PATCH at a time: while one streams, another (or a DELETE) is refused with 423.
    stalled = tus.open_patch(stack, stack.admin_token, upload_id, 4096, data[4096:8192], claimed=1 << 20)
    try:
        second = tus.patch(api, upload_id, 4096, data[4096:5000])
        assert (second.status, second.error) == (423, "upload_running"), second.body
        busy = api.request("DELETE", f"/uploads/{upload_id}", headers=tus.TUS)
        assert busy.status == 423, busy.body
    finally:
        tus.reset(stalled)

    gone = api.request("DELETE", f"/uploads/{upload_id}", headers=tus.TUS)
    assert gone.status == 204, gone.body
    _nothing_left(stack, api, upload_id, name)
    assert tus.patch(api, upload_id, 4096, b"x").status == 410
    rows = rows_named(stack, name)
    assert [(u.status, u.error_message) for u in rows.uploads] == [
        ("failed", "terminated by the client (DELETE)")
    ]


def test_an_upload_idle_past_its_expiry_is_given_up_by_the_janitor(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.qcow2(tmp_path / "idle.qcow2", size_mib=16, data_mib=2, seed=13)
    name = _name("tus-idle")
    upload_id, created = tus.create_on_ceph(stack, api, image, name)
    assert tus.patch(api, upload_id, 0, image.read_bytes()[:8192]).status == 204
    expire_lease(stack, upload_id)  # (as if no PATCH had come for resumable_upload_expiry)
    # The janitor runs every 30 s.
    deadline = time.monotonic() + 120
    while _upload_row(stack, upload_id).status == "uploading":
        assert time.monotonic() < deadline, "the janitor left the expired upload"
        time.sleep(1)
    row = _upload_row(stack, upload_id)
    assert row.status == "failed" and "expired" in (row.error_message or ""), row.error_message
    _nothing_left(stack, api, upload_id, name)


def test_an_invalid_image_is_refused_at_its_last_byte_as_a_multipart_one_and_leaves_nothing(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    image = images.raw_with_data(tmp_path / "not-really.qcow2", size_mib=4, data_mib=1, seed=14)
    name = _name("tus-bad")
    upload_id, created = tus.create_on_ceph(stack, api, image, name)
    reply = tus.patch(api, upload_id, 0, image.read_bytes())
    assert (reply.status, reply.error) == (422, "image_rejected"), reply.body
    assert "qcow2" in reply.message
    _nothing_left(stack, api, upload_id, name)


def test_a_new_version_by_template_id(stack: Stack, api: Api, tmp_path: Path) -> None:
    first = images.qcow2(tmp_path / "v1.qcow2", size_mib=16, data_mib=2, seed=15)
    name = _name("tus-v")
    template_id = upload(api, stack, first, name, storage_id(api, stack, "ceph-storage")).ok()["template_id"]
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    second = images.qcow2(tmp_path / "v2.qcow2", size_mib=16, data_mib=2, seed=16)
    upload_id, created = tus.create(api, second, template_id=str(template_id), description="second")
    assert upload_id, created.body
    assert tus.patch(api, upload_id, 0, second.read_bytes()).status == 204
    became = api.get(f"/uploads/{upload_id}").ok()
    assert (became["template_id"], became["version"]) == (template_id, 2)

    def imported() -> list[int]:
        listed = api.get(f"/templates/{template_id}/versions").ok()["list"]
        return sorted(v["version"] for v in listed if v["status"] == "imported")

    wait_for(lambda: imported() == [1, 2], timeout=60, what="version 2 imported")

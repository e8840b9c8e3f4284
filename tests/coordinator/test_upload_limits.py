"""Clients cannot hog uploads: silent ones are dropped, each token has its share, bytes are capped.

The stack here drops a client after a few seconds of silence, gives a token 2 of its 4
upload slots and reads upload bodies at 4 MiB/s at most (all uploads together). These
limits live in the coordinator's memory; what a dropped upload leaves in the database is
checked on SQLite and MariaDB alike by test_upload_rejects (the same clean-up path).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.stack import Stack
from tests.conftest import start_stack
from tests.support import images
from tests.support.api import Api
from tests.support.uploads import (
    StalledUpload,
    all_vmids,
    assert_nothing_left_soon,
    detail,
    rows_named,
    staged_files,
    stall_upload,
    storage_id,
    upload,
    upload_fields,
    wait_for,
)

MiB = images.MiB
IDLE = 3.0
RATE = 4 * MiB


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {
        "upload_idle_timeout": IDLE,
        "max_concurrent_uploads": 4,
        "max_uploads_per_token": 2,
        "max_upload_rate": RATE,
    }
    s = start_stack(tmp_path_factory.mktemp("upload-limits"), coordinator_settings=settings)
    yield s
    s.stop()


def _token(stack: Stack) -> str:
    name = f"uploader-{secrets.token_hex(3)}"
    return stack.coordinator_cli("token", "create", "--name", name, "--role", "operator").stdout.strip()


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _partial_files(stack: Stack, before: set[str], count: int) -> None:
    wait_for(lambda: len(staged_files(stack) - before) == count, what=f"{count} partial staging files")


def test_silent_clients_are_dropped_and_leave_nothing(stack: Stack, tmp_path: Path) -> None:
    api = Api(stack.api, _token(stack))
    ceph = storage_id(api, stack, "ceph-storage")
    first, second, third = _token(stack), _token(stack), _token(stack)
    staged, vms = staged_files(stack), all_vmids(stack)

    # Four clients take every slot, two tokens' worth, and go silent: two after the request
    # head (not a byte of the form), two a few MiB into the file.
    silent_names = [_name("silent-head"), _name("silent-head"), _name("silent-file"), _name("silent-file")]
    clients: list[StalledUpload] = []
    try:
        for token, name, keep_head in zip(
            [first, second, first, second], silent_names, [0, 0, None, None], strict=True
        ):
            fields = upload_fields(stack, name, ceph)
            data = os.urandom(2 * MiB)
            clients.append(stall_upload(stack, token, fields, "s.raw", data, 64 * MiB, keep_head=keep_head))
        _partial_files(stack, staged, 2)
        image = images.qcow2(tmp_path / "meanwhile.qcow2", size_mib=16, data_mib=1)
        busy = upload(Api(stack.api, third), stack, image, _name("meanwhile"), ceph)
        assert busy.status == 429, busy.body
        assert busy.error == "too_many_uploads"
        assert busy.message == "every upload slot is in use (max_concurrent_uploads = 4); retry later"

        # Each is answered 408 once it has been silent for the idle timeout, and hung up on.
        for client in clients:
            status, body = client.answer()
            assert status == 408, body
            assert body == {
                "code": 408,
                "message": f"no data from the client for {IDLE:g} s: the upload was dropped",
                "data": {"error": "client_idle"},
            }
            assert client.closed_by_server()
    finally:
        for client in clients:
            client.cut()

    for name in silent_names:
        assert_nothing_left_soon(stack, name, staged, vms)
    assert [rows_named(stack, n).uploads for n in silent_names[:2]] == [[], []]  # nothing was made
    for name in silent_names[2:]:
        (row,) = rows_named(stack, name).uploads
        assert row.status == "failed"
        assert (row.error_message or "").startswith(f"upload dropped: no data from the client for {IDLE:g} s")

    # Every slot is free again.
    after = upload(Api(stack.api, third), stack, image, _name("after-silence"), ceph)
    assert after.ok()["status"] == "uploaded"


def test_a_token_gets_two_uploads_at_once_and_others_still_get_in(stack: Stack, tmp_path: Path) -> None:
    greedy, other = _token(stack), _token(stack)
    ceph = storage_id(Api(stack.api, greedy), stack, "ceph-storage")
    staged = staged_files(stack)
    image = images.qcow2(tmp_path / "small.qcow2", size_mib=16, data_mib=1)
    held = [
        stall_upload(stack, greedy, upload_fields(stack, _name("held"), ceph), "h.raw", b"\0" * MiB, 64 * MiB)
        for _ in range(2)
    ]
    try:
        _partial_files(stack, staged, 2)
        # Slow but not silent: they keep their slots for as long as this takes.
        with held[0].trickling(IDLE / 4), held[1].trickling(IDLE / 4):
            third_name = _name("third")
            third = upload(Api(stack.api, greedy), stack, image, third_name, ceph)
            assert third.status == 429, third.body
            assert third.error == "too_many_uploads_for_token"
            assert third.message == (
                "this token already has as many uploads running as it may "
                "(max_uploads_per_token = 2); retry later"
            )
            assert rows_named(stack, third_name).uploads == []
            theirs = upload(Api(stack.api, other), stack, image, _name("other-token"), ceph)
            assert theirs.ok()["status"] == "uploaded"
            assert len(staged_files(stack) - staged) >= 2, "the held uploads were dropped meanwhile"
    finally:
        for client in held:
            client.cut()


def test_the_rate_cap_holds_an_upload_to_its_pace_and_the_bytes_arrive_intact(
    stack: Stack, tmp_path: Path
) -> None:
    api = Api(stack.api, _token(stack))
    image = tmp_path / "paced.raw"
    size = 12 * MiB
    image.write_bytes(os.urandom(size))
    started = time.monotonic()
    reply = upload(api, stack, image, _name("paced"), storage_id(api, stack, "local", "pve-node1"))
    took = time.monotonic() - started
    data = reply.ok()
    assert took >= size / RATE, f"{size} bytes at {RATE} bytes/s took only {took:.2f} s"
    info = detail(api, data["template_id"])["upload_info"]
    assert (info["file_size"], info["sha256"]) == (size, hashlib.sha256(image.read_bytes()).hexdigest())

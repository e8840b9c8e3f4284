"""A resumable (tus) upload driven by hand, as a tus client would: create, HEAD, PATCH, and a
PATCH cut off mid-body (the connection reset after part of it)."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from demo.stack import Stack
from shared.tus import encode_metadata
from tests.support.api import Api, Reply

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


def create(api: Api, image: Path, **metadata: str) -> tuple[int, Reply]:
    """POST /uploads for ``image``; its upload id (0 if refused) and the answer."""
    headers = {
        **TUS,
        "Upload-Length": str(image.stat().st_size),
        "Upload-Metadata": encode_metadata({"filename": image.name, **metadata}),
    }
    reply = api.post("/uploads", headers=headers)
    if reply.status != 201:
        return 0, reply
    return int(reply.headers["Location"].rsplit("/", 1)[1]), reply


def create_on_ceph(stack: Stack, api: Api, image: Path, name: str) -> tuple[int, Reply]:
    """A resumable upload of ``image`` as new template ``name`` on ceph-storage (shared)."""
    ceph = [
        s["id"]
        for s in api.all("/storages", cluster_id=stack.cluster_id)
        if s["storage_name"] == "ceph-storage"
    ]
    upload_id, created = create(
        api, image, template_name=name, cluster_id=str(stack.cluster_id), storage_id=str(ceph[0])
    )
    assert upload_id, created.body
    return upload_id, created


def offset(api: Api, upload_id: int) -> int:
    reply = api.request("HEAD", f"/uploads/{upload_id}", headers=TUS)
    assert reply.status == 200, (reply.status, reply.headers)
    return int(reply.headers["Upload-Offset"])


def patch(api: Api, upload_id: int, at: int, data: bytes, timeout: float = 120) -> Reply:
    headers = {**TUS, "Upload-Offset": str(at), "Content-Type": OFFSET_TYPE}
    return api.request("PATCH", f"/uploads/{upload_id}", headers=headers, data=data, timeout=timeout)


def open_patch(stack: Stack, token: str, upload_id: int, at: int, data: bytes, claimed: int) -> socket.socket:
    """A PATCH announcing ``claimed`` bytes from ``at`` that has sent ``data`` only (and waits)."""
    sock = socket.create_connection((stack.s.host, stack.s.coordinator_port), timeout=30)
    head = (
        f"PATCH /api/v1/uploads/{upload_id} HTTP/1.1\r\nHost: {stack.s.host}\r\n"
        f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {at}\r\n"
        f"Content-Type: {OFFSET_TYPE}\r\nContent-Length: {claimed}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    time.sleep(0.5)  # (the bytes on their way to the agent)
    return sock


def reset(sock: socket.socket) -> None:
    """Hang up with RST: the client's network is gone mid-body."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def cut_patch(stack: Stack, token: str, upload_id: int, at: int, data: bytes, claimed: int) -> None:
    """A PATCH cut off after ``data`` of the ``claimed`` bytes it announced."""
    reset(open_patch(stack, token, upload_id, at, data, claimed))

"""Uploading images through the coordinator's API and looking at what it left behind.

Everything here observes the system from outside, as an administrator could:
the REST API, the emulator's state directory and control API, the agents'
staging directories and the coordinator's database.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload, VmTemplate
from demo.stack import Stack
from tests.support.api import Api, Reply
from tests.support.db import with_session

IMPORT_TIMEOUT = 60.0


def storage_id(api: Api, stack: Stack, name: str, node: str | None = None) -> int:
    """The pve_storage id of ``name`` (on ``node``, or any node for a shared storage)."""
    rows = [s for s in api.all("/storages", cluster_id=stack.cluster_id) if s["storage_name"] == name]
    if node is not None:
        rows = [s for s in rows if s["node_name"] == node]
    assert rows, f"no storage {name!r} on {node or 'any node'}"
    return int(sorted(rows, key=lambda s: s["node_name"])[0]["id"])


def node_ids(api: Api, stack: Stack) -> dict[str, int]:
    return {n["node_name"]: n["id"] for n in api.all("/nodes", cluster_id=stack.cluster_id)}


def upload(
    api: Api,
    stack: Stack,
    image: Path,
    name: str,
    storage: int,
    *,
    file_name: str | None = None,
    timeout: float = 120,
    query: str = "",
    **fields: Any,
) -> Reply:
    """POST /templates/upload as curl -F would send it (fields first, the file last)."""
    data = {"template_name": name, "cluster_id": str(stack.cluster_id), "storage_id": str(storage)}
    data.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()})
    with open(image, "rb") as f:
        files = {"file": (file_name or image.name, f, "application/octet-stream")}
        return api.post("/templates/upload" + query, data=data, files=files, timeout=timeout)


def detail(api: Api, template_id: int) -> dict[str, Any]:
    return api.get(f"/templates/{template_id}/detail?include_instances=true").ok()  # type: ignore[no-any-return]


def wait_import(api: Api, template_id: int, timeout: float = IMPORT_TIMEOUT) -> dict[str, Any]:
    """Poll the detail until the upload is imported or failed; returns the last detail."""
    deadline = time.monotonic() + timeout
    while True:
        d = detail(api, template_id)
        if d["upload_info"]["status"] in ("imported", "failed"):
            return d
        assert time.monotonic() < deadline, f"import not finished after {timeout}s: {d['upload_info']}"
        time.sleep(0.3)


# ------------------------------------------------------------------ emulator


def emulator(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    """Call the emulator's control API (/pvesim/...) as root."""
    info = stack.pve_token()
    secret = (stack.pvesim_dir / "root.secret").read_text().strip()
    req = urllib.request.Request(
        info["api_url"].rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"PVESimRoot={secret}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=info["ca_file"])
    with urllib.request.urlopen(req, context=context, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def vm_conf(stack: Stack, node: str, vmid: int) -> dict[str, str] | None:
    """The top section of a VM's config file in the emulator, or None when there is no VM."""
    path = stack.pvesim_dir / "nodes" / node / "qemu-server" / f"{vmid}.conf"
    if not path.exists():
        return None
    conf: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("["):
            break  # snapshots / pending sections
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        conf[key.strip()] = value.strip()
    return conf


def vm_anywhere(stack: Stack, vmid: int) -> list[str]:
    """Nodes whose emulator state holds VM ``vmid``."""
    return [n for n in stack.node_names() if vm_conf(stack, n, vmid) is not None]


def pve_tasks(stack: Stack, node: str, kind: str, vmid: int) -> list[tuple[str, str | None]]:
    """A node's PVE tasks of ``kind`` on VM ``vmid``: (UPID, how it ended; None while it runs)."""
    tasks_dir = stack.pvesim_dir / "nodes" / node / "tasks"
    found: list[tuple[str, str | None]] = []
    active = tasks_dir / "active"
    for upid in json.loads(active.read_text() or "[]") if active.exists() else []:
        found.append((upid, None))
    index = tasks_dir / "index"
    for line in index.read_text().splitlines() if index.exists() else []:
        upid, _end, status = line.split(" ", 2)
        found.append((upid, status))
    return [(upid, status) for upid, status in found if f":{kind}:{vmid}:" in upid]


def task_log(stack: Stack, upid: str) -> list[str]:
    """The log of a PVE task (``nodes/<node>/tasks/<one hex digit>/<UPID>``)."""
    node = upid.split(":")[1]
    for path in (stack.pvesim_dir / "nodes" / node / "tasks").glob(f"*/{upid}"):
        return path.read_text().splitlines()
    return []


def shared_volume(stack: Stack, storage: str, volname: str) -> Path:
    """A volume of a shared block storage (rbd): one raw file named like the image."""
    return stack.pvesim_dir / "shared" / "storage" / storage / volname


def local_image_dir(stack: Stack, node: str, storage: str, vmid: int) -> Path:
    """Where a dir storage keeps a VM's disks: <storage>/images/<vmid>/."""
    return stack.pvesim_dir / "nodes" / node / "storage" / storage / "images" / str(vmid)


def import_dir(stack: Stack, node: str, storage: str) -> Path:
    """Where a local dir storage keeps its ``import`` content volumes: <storage>/import/ (an
    administrator copies images there; PVE lists them as ``<storage>:import/<name>``)."""
    return stack.pvesim_dir / "nodes" / node / "storage" / storage / "import"


# ------------------------------------------------------------------ agents' staging


def expire_lease(stack: Stack, upload_id: int) -> None:
    """Make an upload's lease run out now (as if its coordinator had been gone that long)."""

    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(TemplateUpload)
            .where(TemplateUpload.id == upload_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()

    with_session(stack.database_url, work)


def staging_dir(stack: Stack, node: str) -> Path:
    return stack.base / "agents" / node / "staging"


def staged_files(stack: Stack) -> set[str]:
    """Every file in every agent's staging directory, as node/name."""
    found = set()
    for node in stack.node_names():
        root = staging_dir(stack, node)
        if root.is_dir():
            found |= {f"{node}/{p.name}" for p in root.iterdir() if p.is_file()}
    return found


# ------------------------------------------------------------------ database


@dataclass
class Rows:
    templates: list[VmTemplate]
    uploads: list[TemplateUpload]
    instances: list[TemplateInstance]
    tasks: list[TemplateSyncTask]


def rows_named(stack: Stack, name: str) -> Rows:
    """Every row (live or not) made for a template name."""

    async def work(session: AsyncSession) -> Rows:
        templates = list(await session.scalars(select(VmTemplate).where(VmTemplate.template_name == name)))
        ids = [t.id for t in templates] or [0]
        uploads = list(
            await session.scalars(select(TemplateUpload).where(TemplateUpload.template_name == name))
        )
        instances = list(
            await session.scalars(select(TemplateInstance).where(TemplateInstance.template_id.in_(ids)))
        )
        tasks = list(
            await session.scalars(select(TemplateSyncTask).where(TemplateSyncTask.template_id.in_(ids)))
        )
        return Rows(templates, uploads, instances, tasks)

    return with_session(stack.database_url, work)


def upload_count(stack: Stack) -> int:
    async def work(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(TemplateUpload)) or 0)

    return with_session(stack.database_url, work)


def assert_nothing_left(stack: Stack, name: str, staged_before: set[str], vms_before: set[int]) -> None:
    """A refused upload leaves no template, no live upload, no staged file and no VM."""
    rows = rows_named(stack, name)
    assert rows.templates == [], f"template rows left for {name!r}"
    assert rows.instances == [] and rows.tasks == []
    assert all(u.status == "failed" and u.template_id is None for u in rows.uploads), [
        (u.id, u.status, u.template_id) for u in rows.uploads
    ]
    assert all(u.lease_owner is None for u in rows.uploads)
    # Partial files (.part) count too: nothing new may stay in any staging directory.
    assert staged_files(stack) - staged_before == set()
    assert all_vmids(stack) - vms_before == set()


def all_vmids(stack: Stack) -> set[int]:
    found = set()
    for node in stack.node_names():
        confdir = stack.pvesim_dir / "nodes" / node / "qemu-server"
        found |= {int(p.stem) for p in confdir.glob("*.conf")}
    return found


# ------------------------------------------------------------------ raw HTTP (for cut and oversized bodies)


def multipart(
    fields: dict[str, str], file_name: str, boundary: str = "pvesphere-test-boundary"
) -> tuple[str, bytes, bytes]:
    """(content type, everything before the file's bytes, everything after them)."""
    head = b""
    for key, value in fields.items():
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n').encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", head, f"\r\n--{boundary}--\r\n".encode()


def upload_fields(stack: Stack, name: str, storage: int) -> dict[str, str]:
    return {"template_name": name, "cluster_id": str(stack.cluster_id), "storage_id": str(storage)}


def _request_head(stack: Stack, token: str, content_type: str, extra: dict[str, str]) -> bytes:
    lines = [
        "POST /api/v1/templates/upload HTTP/1.1",
        f"Host: {stack.s.host}:{stack.s.coordinator_port}",
        f"Authorization: Bearer {token}",
        f"Content-Type: {content_type}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Answer:
    status: int
    body: Any
    # Bytes the client had handed to the connection when the answer arrived, and whether
    # the body it meant to send was complete by then.
    sent: int
    finished_sending: bool


def _read_answer(sock: socket.socket) -> tuple[int, Any]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    raw = resp.read()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def stream_upload(
    stack: Stack, token: str, fields: dict[str, str], file_name: str, chunks: Iterator[bytes]
) -> Answer:
    """Send an upload with chunked transfer encoding while listening for the answer.

    The body is sent from a thread; the answer is read as soon as it comes, so an
    answer that arrives before the body is finished is seen as such.
    """
    content_type, head, tail = multipart(fields, file_name)
    sock = socket.create_connection((stack.s.host, stack.s.coordinator_port), timeout=60)
    sent = [0]
    stop = threading.Event()
    done = threading.Event()

    def body() -> Iterator[bytes]:
        yield head
        for chunk in chunks:
            if stop.is_set():
                return
            sent[0] += len(chunk)
            yield chunk
        yield tail
        done.set()

    def send() -> None:
        try:
            sock.sendall(_request_head(stack, token, content_type, {"Transfer-Encoding": "chunked"}))
            for piece in body():
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: expected once it has answered

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        status, answer = _read_answer(sock)
        when, finished = sent[0], done.is_set()
    finally:
        stop.set()
        sender.join(30)
        sock.close()
    return Answer(status, answer, when, finished)


class StalledUpload:
    """An upload whose client has sent the request head and part of its body, then nothing more.

    As a context manager: the client hangs up when the block ends.
    """

    def __init__(self, stack: Stack, token: str, content_type: str, length: int, body: bytes) -> None:
        self.sock = socket.create_connection((stack.s.host, stack.s.coordinator_port), timeout=60)
        self.sock.sendall(_request_head(stack, token, content_type, {"Content-Length": str(length)}))
        self.sock.sendall(body)
        self._trickling = threading.Event()

    def answer(self) -> tuple[int, Any]:
        """The server's answer (waits for it)."""
        return _read_answer(self.sock)

    def closed_by_server(self) -> bool:
        """After the answer: does the server close the connection (rather than wait for more)?"""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    @contextlib.contextmanager
    def trickling(self, every: float) -> Iterator[None]:
        """Inside: one more byte of the file every ``every`` seconds (a slow client, not a silent one)."""
        self._trickling.set()

        def send() -> None:
            while self._trickling.is_set():
                with contextlib.suppress(OSError):
                    self.sock.sendall(b"\0")
                time.sleep(every)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            yield
        finally:
            self._trickling.clear()
            sender.join(10)

    def cut(self) -> None:
        """Hang up with RST rather than FIN: the client is gone, not merely done sending."""
        if self.sock.fileno() == -1:
            return
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> StalledUpload:
        return self

    def __exit__(self, *_: object) -> None:
        self.cut()


def stall_upload(
    stack: Stack,
    token: str,
    fields: dict[str, str],
    file_name: str,
    data: bytes,
    claimed_size: int,
    *,
    keep_head: int | None = None,
) -> StalledUpload:
    """Announce ``claimed_size`` bytes of file and send ``data`` only.

    With ``keep_head`` only that many bytes of the form fields go out (0: only the request head).
    """
    content_type, head, tail = multipart(fields, file_name)
    length = len(head) + claimed_size + len(tail)
    body = head + data if keep_head is None else head[:keep_head]
    return StalledUpload(stack, token, content_type, length, body)


def assert_nothing_left_soon(stack: Stack, name: str, staged: set[str], vms: set[int]) -> None:
    """The agent removes a partial file once it notices the broken stream: allow it a moment."""
    deadline = time.monotonic() + 10
    while True:
        try:
            assert_nothing_left(stack, name, staged, vms)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.2)


def importing_slowly(api: Api, stack: Stack, image: Path, name: str, node: str, rate: int) -> tuple[int, int]:
    """Upload ``image`` to ``node``'s local storage with PVE's disk import slowed to ``rate``
    bytes/s (the emulator's import_rate_limit, left set: the caller sets it back to 0);
    (template id, VMID) once PVE is converting the disk."""
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": rate})
    template_id = upload(api, stack, image, name, storage_id(api, stack, "local", node)).ok()["template_id"]

    def converting() -> int | None:
        vmid = detail(api, template_id)["upload_info"]["vmid"]
        running = [upid for upid, ended in pve_tasks(stack, node, "qmcreate", vmid or 0) if ended is None]
        logs = [line for upid in running for line in task_log(stack, upid)]
        return vmid if any(line.startswith("transferred ") for line in logs) else None

    return template_id, wait_for(converting, 60, "PVE converting the disk")

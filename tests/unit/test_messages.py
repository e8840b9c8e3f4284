"""The messages between the parts (shared/messages/): what one side encodes the other decodes
to the same struct; a missing or wrong field is refused naming it; a field a newer peer
adds is ignored, and one an older peer leaves out takes its default."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from agent.client import AgentClient, AgentError
from shared.error_slugs import ErrorSlug, ImportErrorKind
from shared.messages import decode, encode
from shared.messages.imports import ImportRequest, ImportView
from shared.messages.link import AgentHello, Envelope, Registered, TransferSettings
from shared.messages.transfers import Hop, ReceiveView, SessionOpened, SessionRequest
from shared.messages.vms import VmRemoved
from shared.staged_names import StagedName
from shared.text_fields import Description, StorageId, VmName
from shared.validation import InvalidInput, parse
from shared.vm_config import VmConfig

HOP = Hop(task_id=3, task_uid="ab" * 16, epoch=2, node="pve-node2", url="https://n2:8443", ticket="t")
VIEW = ReceiveView(
    task_id=3,
    task_uid="ab" * 16,
    epoch=2,
    state="failed",
    size=10,
    verified=4,
    rate_bytes_per_sec=0,
    error="staging disk is full",
    error_kind=ErrorSlug.NO_SPACE,
    corrupt_chunks=0,
    received_bytes=4,
    resumed_from=0,
    staged_name=None,
    forwarding=False,
)
IMPORT = ImportRequest(
    key="t1-u1",
    vmid=9000,
    staged_name=StagedName("upload-1-0123abcd.qcow2"),
    storage=StorageId("local-lvm"),
    name=VmName("ubuntu"),
    description=Description("Ubuntu"),
    options=VmConfig({"cores": "2"}),
    image_size=1 << 30,
)


@pytest.mark.parametrize(
    "message",
    [HOP, VIEW, IMPORT, SessionRequest("t", [HOP]), VmRemoved(9000, True, key="t1-u1", how="marker")],
    ids=lambda m: type(m).__name__,
)
def test_what_one_side_encodes_the_other_decodes_to_the_same_message(message: Any) -> None:
    assert decode(type(message), encode(message)) == message
    assert parse(type(message), msgspec.json.decode(encode(message))) == message


def test_the_wire_keeps_its_field_names_and_slugs_their_text() -> None:
    wire = msgspec.json.decode(encode(VIEW))
    assert wire["error_kind"] == "no_space" and wire["staged_name"] is None
    assert set(wire) == {f for f in ReceiveView.__struct_fields__}
    # Fields that only some answers carry are left out, as before, not sent as null.
    assert msgspec.json.decode(encode(VmRemoved(9000, removed=False))) == {"vmid": 9000, "removed": False}
    assert "plain_url" not in msgspec.json.decode(encode(SessionOpened("s", offset=0, size=1)))


def test_a_missing_or_wrong_field_is_refused_naming_it() -> None:
    wire = msgspec.json.decode(encode(IMPORT))
    del wire["storage"]
    with pytest.raises(InvalidInput) as missing:
        parse(ImportRequest, wire)
    assert missing.value.fields == {"storage": "is required"}
    with pytest.raises(InvalidInput) as wrong:
        parse(ImportRequest, {**msgspec.json.decode(encode(IMPORT)), "vmid": "many"})
    assert set(wrong.value.fields) == {"vmid"}
    with pytest.raises(msgspec.ValidationError, match=r"`task_uid` - at `\$\.next_hops\[0\]`"):
        decode(SessionRequest, b'{"ticket": "t", "next_hops": [{"task_id": 3}]}')


@pytest.mark.parametrize("sender", ["pve/../node1", "node\u0000", "a" * 64, "-node", 'x"} 1\n'])
def test_a_sender_that_is_no_node_name_is_refused_naming_it(sender: str) -> None:
    """The sending node's name becomes a metrics label on the target: node names only."""
    with pytest.raises(InvalidInput) as bad:
        parse(SessionRequest, {"ticket": "t", "sender": sender})
    assert set(bad.value.fields) == {"sender"}
    assert parse(SessionRequest, {"ticket": "t", "sender": "pve-node2"}).sender == "pve-node2"


def test_a_field_a_newer_peer_adds_is_ignored_and_one_an_older_peer_leaves_out_has_its_default() -> None:
    newer = {**msgspec.json.decode(encode(IMPORT)), "priority": "high"}
    assert parse(ImportRequest, newer) == IMPORT
    older = {"key": "t1-u1", "vmid": 9000, "state": "running", "phase": "starting", "progress": 0}
    view = decode(ImportView, older)
    assert (view.error, view.error_kind, view.volume_id) == (None, None, None)


def test_the_coordinators_envelope_carries_the_registration() -> None:
    registered = Registered(
        agent_id=1,
        node_id=None,
        heartbeat_interval=5.0,
        coordinator_version="0.1.0",
        transfers=TransferSettings("key", 2, 2, "tls"),
    )
    wire = {"code": 200, "message": "success", "data": msgspec.to_builtins(registered)}
    assert decode(Envelope[Registered], wire).data == registered
    hello = AgentHello("pve-node1", "c", "https://a", "0.1.0", datetime.now(UTC), True, 1)
    assert parse(AgentHello, msgspec.to_builtins(hello)) == hello


def test_an_import_kind_is_one_of_the_enum() -> None:
    with pytest.raises(msgspec.ValidationError, match="error_kind"):
        decode(
            ImportView,
            {"key": "k", "vmid": 1, "state": "failed", "phase": "", "progress": 0, "error_kind": "?"},
        )
    assert decode(
        ImportView, encode(ImportView("k", 1, "failed", "", 0, error_kind=ImportErrorKind.VMID_TAKEN))
    )


class _Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self.body


class _Session:
    """Answers every request with one canned response (no network)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.answer = _Answer(status, body)

    def request(self, *args: Any, **kw: Any) -> _Answer:
        return self.answer


async def _receive_state(status: int, body: bytes) -> ReceiveView:
    client = AgentClient(_Session(status, body), "https://agent")  # type: ignore[arg-type]
    return await client.receive_state(3, "ab" * 16)


async def test_the_client_returns_the_message_and_refuses_an_answer_that_is_not_one() -> None:
    assert await _receive_state(200, encode(VIEW)) == VIEW
    with pytest.raises(AgentError) as bad:
        await _receive_state(200, b'{"task_id": 3}')
    assert bad.value.error == ErrorSlug.BAD_RESPONSE and "ReceiveView" in bad.value.message
    assert "task_uid" in bad.value.message


async def test_the_client_reads_an_error_slug_as_the_enum_and_an_unknown_one_as_agent_error() -> None:
    with pytest.raises(AgentError) as busy:
        await _receive_state(429, b'{"error": "busy", "message": "already receiving"}')
    assert (busy.value.status, busy.value.error, busy.value.message) == (
        429,
        ErrorSlug.BUSY,
        "already receiving",
    )
    with pytest.raises(AgentError) as newer:
        await _receive_state(409, b'{"error": "slug_of_a_later_release", "message": "m"}')
    assert newer.value.error == ErrorSlug.AGENT_ERROR
    with pytest.raises(AgentError) as text:
        await _receive_state(502, b"Bad Gateway")
    assert (text.value.error, text.value.message) == (ErrorSlug.BAD_RESPONSE, "Bad Gateway")

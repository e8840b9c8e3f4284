"""Copies between agents. Coordinator -> source agent: GET /v1/staged/{name}/manifest (the
digest of the image's chunk manifest, shared/manifest.py, which tickets sign), POST
/v1/transfers (a staged image along a chain of hops); coordinator -> target: GET/DELETE
/v1/receives/{task_id}. Agent -> agent: POST /v1/receives/{task_id}/session with a ticket
and the manifest (answered with the chunks the target needs), then PUT .../data (frames,
shared/frames.py), both answered with what the receive looks like."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from shared.error_slugs import ErrorSlug
from shared.tickets import TASK_UID
from shared.validation import Model

# shared/pve_formats.py NODE_RE (pve-node), or empty.
SENDER = r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)?\Z"


class Seed(Model):
    """A PVE volume on the hop's node that holds an earlier version of the image: chunks
    it has are copied from it, not sent (the target checks each against the manifest)."""

    vmid: Annotated[int, Meta(ge=1)]
    volume_id: Annotated[str, Meta(min_length=3, max_length=300)]


class Hop(Model):
    """One target of a transfer: the node, its agent's URL, and the ticket for its task."""

    task_id: Annotated[int, Meta(ge=1)]
    task_uid: Annotated[str, Meta(pattern=TASK_UID)]  # what the hop keys its receive by
    epoch: Annotated[int, Meta(ge=1)]  # the task's attempt: later tickets only for it
    node: Annotated[str, Meta(min_length=1)]
    url: Annotated[str, Meta(min_length=1)]
    # Never empty on the wire; a sender empties it for a hop it routes to itself (no ticket
    # yet: it asks the coordinator for one, agent/transfer/send.py).
    ticket: Annotated[str, Meta(min_length=1)]
    # Earlier versions of the template on that node (its available instances).
    seeds: Annotated[list[Seed], Meta(max_length=16)] = []


class TransferRequest(Model):
    transfer_id: Annotated[str, Meta(pattern="^[A-Za-z0-9._-]{1,64}\\Z")]
    staged_name: str
    size: Annotated[int, Meta(ge=1)]
    hops: Annotated[list[Hop], Meta(min_length=1)]


class TransferStarted(Model):
    transfer_id: str
    started: bool  # False: a transfer of that id runs already


class SessionRequest(Model):
    ticket: str
    next_hops: list[Hop] = []  # the hops this one relays to
    # The copy's chunk manifest (shared/manifest.py); its sha256 is the ticket's ``manifest``.
    manifest: bytes = b""
    # What the target may hold of the image already (the hop's seeds, from the coordinator).
    seeds: Annotated[list[Seed], Meta(max_length=16)] = []
    # Payload compressions the sender can use (shared/wire_codec.py), in its order of choice.
    codecs: Annotated[list[Annotated[str, Meta(max_length=16)]], Meta(max_length=8)] = []
    # The sending node's name (the target's metrics count bytes by peer; empty: not said).
    # A PVE node name or nothing: it becomes a metrics label, and a peer's word is no more.
    sender: Annotated[str, Meta(max_length=63, pattern=SENDER)] = ""


class SessionOpened(Model, omit_defaults=True):
    session: str
    offset: int  # where the stream goes on from (the bytes verified so far)
    size: int  # the guest view's bytes (the image's virtual size)
    # One bit per chunk (chunk i: byte i // 8, bit i % 8): the chunks the stream must carry
    # from ``offset`` on; the target makes the others itself (zeros, chunks it holds).
    needed: bytes = b""
    plain_url: str | None = None  # on the insecure data plane: where the frames go in the clear
    codec: str | None = None  # the one of the request's codecs the frames may use (None: plain)


ReceiveState = Literal["receiving", "idle", "complete", "failed"]


class ReceiveView(Model):
    task_id: int
    task_uid: str
    epoch: int
    state: ReceiveState
    size: int
    verified: int
    rate_bytes_per_sec: int
    error: str | None
    error_kind: ErrorSlug | None
    corrupt_chunks: int
    # Payload that crossed the network, re-sent bytes included (bytes_sent); ``size`` and
    # ``verified`` count the guest view (the image's virtual size).
    received_bytes: int
    resumed_from: int  # where the latest session (attempt or resume) began: verified before it
    staged_name: str | None  # once complete
    forwarding: bool
    # Bytes of the image the target did not receive over the network: zeros, and chunks it
    # already held (an earlier version of the template; the sync task's bytes_reused).
    reused_bytes: int = 0
    # Chunks taken from what the target held that failed their manifest check (then fetched).
    corrupt_reused: int = 0


class ManifestView(Model, omit_defaults=True):
    """A staged image's chunk manifest on its agent (GET /v1/staged/{name}/manifest)."""

    staged_name: str
    state: Literal["building", "ready", "failed"]
    digest: str | None = None  # sha256 hex of the manifest's bytes (what the ticket signs)
    size: int = 0  # the guest view's bytes
    image_sha256: str | None = None  # sha256 of the whole guest view
    error: str | None = None


class ReceiveRemoved(Model):
    task_id: int
    removed: bool

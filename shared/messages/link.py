"""Agent -> coordinator (/agent-api/v1): enrolment, register and heartbeat, goodbye, tickets
for transfers, staged copies an agent asks to evict. The coordinator answers inside its
envelope ``{"code", "message", "data"}`` (Envelope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from msgspec import Meta

from shared.tickets import TASK_UID
from shared.validation import Model

D = TypeVar("D")
# A node's name as PVE allows it (a DNS label).
NODE_NAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


class Envelope(Model, Generic[D]):
    """Every answer of the coordinator: ``data`` holds the message."""

    code: int
    message: str
    data: D


class EnrolRequest(Model):
    node_name: Annotated[str, Meta(pattern=f"^{NODE_NAME}$")]


class Enrolled(Model):
    node_name: str
    generation: int
    credential: str


class Identity(Model):
    node_name: str
    generation: int


class AgentHello(Model):
    """What an agent reports when it registers and with every heartbeat."""

    node_name: Annotated[str, Meta(min_length=1, max_length=100)]
    cluster_name: Annotated[str, Meta(max_length=100)]
    # The coordinator sends the node's credential there: HTTPS only.
    url: Annotated[str, Meta(max_length=255, pattern="^https://")]
    version: Annotated[str, Meta(max_length=50)]
    started_at: Annotated[datetime, Meta(tz=True)]
    pve_ok: bool
    staging_free_bytes: Annotated[int, Meta(ge=0)]
    pve_error: str | None = None


class TransferSettings(Model):
    """How agents check tickets, how many streams a node may run at once, and whether image
    bytes may cross in the clear (data_plane)."""

    ticket_public_key: str
    max_inbound: int
    max_outbound: int
    data_plane: str


class Registered(Model):
    agent_id: int
    node_id: int | None
    heartbeat_interval: float
    coordinator_version: str
    transfers: TransferSettings


class Goodbye(Model):
    agent_id: int


class TicketRequest(Model):
    task_id: Annotated[int, Meta(ge=1)]
    task_uid: Annotated[str, Meta(pattern=TASK_UID)]  # the task, not another under a reused id
    epoch: Annotated[int, Meta(ge=1)]  # the attempt the sender's transfer belongs to


class TicketOut(Model):
    task_id: int
    epoch: int
    ticket: str


class ReleaseRequest(Model):
    staged_name: Annotated[str, Meta(min_length=1, max_length=128)]


class ReleaseOut(Model):
    staged_name: str
    released: bool
    reason: str

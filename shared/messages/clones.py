"""Coordinator -> agent: a VM cloned from a template on the agent's node (POST /v1/clones,
GET /v1/clones/{key}, POST /v1/clones/{key}/cancel); every answer is the clone's view.

The agent runs PVE's clone (``POST /nodes/{node}/qemu/{source_vmid}/clone``) and then sets
the clone's own options, as one keyed operation: asking again with the same key returns the
running or finished clone, so a restarted coordinator picks up where it was (as imports do).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from shared.error_slugs import ImportErrorKind
from shared.messages.link import NODE_NAME
from shared.text_fields import Description, StorageId, VmName
from shared.validation import Model
from shared.vm_config import VmConfig


class CloneRequest(Model):
    """What the coordinator asks for; the agent checks every field again (it trusts nothing).

    ``target_node``: where the clone goes when that is not this node (PVE allows it only from
    a template on shared storage); None: this node. ``full``: a full copy (to
    ``target_storage`` if given, else the template's storage); else a linked clone of the
    template's base volumes. ``description`` is the clone's own: never the template's, whose
    marker would make the clone look like one of our templates. ``options``: the clone's
    vm_config (the upload's allowlist, cloud-init keys included), set after the clone.
    ``image_size`` scales the deadline (a full clone copies the whole disk)."""

    key: Annotated[str, Meta(pattern="^c[0-9]+\\Z")]
    source_vmid: Annotated[int, Meta(ge=100, le=999999999)]
    vmid: Annotated[int, Meta(ge=100, le=999999999)]
    name: VmName
    full: bool
    target_node: Annotated[str, Meta(pattern=f"^{NODE_NAME}\\Z")] | None = None
    target_storage: StorageId | None = None
    description: Description = Description("")
    options: VmConfig = VmConfig()
    image_size: Annotated[int, Meta(ge=0)] = 0


CloneState = Literal["running", "done", "failed"]


class CloneView(Model):
    """How far a clone is (``progress`` 0-100 from PVE's task log: full clones report it);
    ``error_kind`` says what the coordinator does about a failure (``vmid_taken``: pick another
    VMID and ask again), as for imports."""

    key: str
    vmid: int
    state: CloneState
    phase: str
    progress: float
    linked: bool
    error: str | None = None
    error_kind: ImportErrorKind | None = None

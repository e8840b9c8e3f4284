"""What a clone will do, decided before anything is made (pure).

Linked or full, from PVE's storage plugins' feature table (``volume_has_feature`` with
``clone`` on a template's base volume): a file storage (dir, NFS, CIFS, GlusterFS) links a
base volume in raw, qcow2 or vmdk (the clone gets a qcow2 overlay on it); LVM-thin, ZFS and
RBD clone their base volumes natively (BTRFS its raw ones); LVM (thick), iSCSI and the
rest copy only. ``full`` null picks linked where the storage can; ``full: false`` where it
cannot is refused, naming why (PVE would fail the clone the same way, after the VMID is
taken).

Where: a local-storage template is cloned by the agent of the clone's node from that
node's instance, which a sync task makes first if the node has none available. A
shared-storage template is one VM, on the node that imported it: PVE clones it only
there (``POST /nodes/{that node}/qemu/{vmid}/clone``), with ``target`` naming the clone's
node when it is another; to another node PVE copies only onto shared storage ("can't clone
to non-shared storage").
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.errors import Invalid
from shared.error_slugs import ErrorSlug

# Storage types whose plugin clones a base volume in place, and in which formats.
FILE_TYPES = frozenset({"dir", "nfs", "cifs", "glusterfs"})
FILE_LINK_FORMATS = frozenset({"raw", "qcow2", "vmdk"})
BLOCK_LINK_FORMATS = {"lvmthin": None, "zfspool": None, "rbd": None, "btrfs": frozenset({"raw"})}
WHY_NOT = {
    "lvm": "LVM (thick) storage has no linked clones (PVE's LVM plugin copies only); use full",
}


@dataclass(frozen=True)
class StorageFacts:
    """A storage as one node sees it (a row of pve_storage)."""

    name: str
    type: str
    shared: bool
    content: frozenset[str]
    enabled: bool = True
    active: bool = True


@dataclass(frozen=True)
class NodeRef:
    id: int
    name: str


@dataclass(frozen=True)
class TemplateFacts:
    storage: StorageFacts  # the template's storage
    volume_format: str  # its disk's format on that storage (raw, qcow2, ... or "" for a block volume)
    home: NodeRef  # the node whose VM a shared-storage template is


@dataclass(frozen=True)
class CloneAsk:
    node: NodeRef
    full: bool | None
    target_storage: str | None
    # The node's available instance's VMID (local storage), or None.
    instance_vmid: int | None
    # What the clone's node sees: its storages by name.
    node_storages: dict[str, StorageFacts]


@dataclass(frozen=True)
class ClonePlan:
    linked: bool
    needs_sync: bool
    source: NodeRef  # whose agent clones
    source_vmid: int | None  # None: the sync task will make it
    target_node: str | None  # the clone's node when it is not ``source``
    target_storage: str | None


def linked_refusal(storage_type: str, volume_format: str) -> str | None:
    """Why this storage cannot link-clone a base volume in this format; None: it can."""
    if storage_type in FILE_TYPES:
        if volume_format in FILE_LINK_FORMATS:
            return None
        return f"{storage_type} storage links base volumes in raw, qcow2 or vmdk only, not {volume_format!r}"
    if storage_type in BLOCK_LINK_FORMATS:
        formats = BLOCK_LINK_FORMATS[storage_type]
        if formats is None or volume_format in formats:
            return None
        return f"{storage_type} storage links raw base volumes only, not {volume_format!r}"
    return WHY_NOT.get(storage_type, f"{storage_type} storage has no linked clones in PVE; use full")


def volume_format(volume_id: str) -> str:
    """'local:9000/base-9000-disk-0.qcow2' -> 'qcow2'; a block volume has no suffix ('')."""
    name = volume_id.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return name.rsplit(".", 1)[-1] if "." in name else ""


def plan_clone(template: TemplateFacts, ask: CloneAsk) -> ClonePlan:
    """The plan, or Invalid (a 400) naming the field that cannot work and why."""
    full = _full(template, ask)
    target_storage = _target_storage(template, ask) if full else None
    if template.storage.shared:
        away = ask.node.id != template.home.id
        return ClonePlan(
            linked=not full,
            needs_sync=False,
            source=template.home,
            source_vmid=None,  # the caller's: the template's one VM
            target_node=ask.node.name if away else None,
            target_storage=target_storage,
        )
    if ask.instance_vmid is None and template.storage.name not in ask.node_storages:
        raise Invalid(
            ErrorSlug.STORAGE_MISSING_ON_NODE,
            f"node {ask.node.name} has no storage named {template.storage.name!r} to receive "
            "the template before the clone",
        )
    return ClonePlan(
        linked=not full,
        needs_sync=ask.instance_vmid is None,
        source=ask.node,
        source_vmid=ask.instance_vmid,
        target_node=None,
        target_storage=target_storage,
    )


def _full(template: TemplateFacts, ask: CloneAsk) -> bool:
    refusal = linked_refusal(template.storage.type, template.volume_format)
    if ask.full is False:
        if ask.target_storage is not None:
            raise Invalid(
                ErrorSlug.TARGET_STORAGE_UNUSABLE,
                "target_storage is for full clones only: a linked clone stays on the template's storage",
                {"fields": {"target_storage": "only with full: true (or null)"}},
            )
        if refusal is not None:
            raise Invalid(
                ErrorSlug.LINKED_CLONE_UNSUPPORTED,
                f"full: false is impossible on storage {template.storage.name!r}: {refusal}",
                {"fields": {"full": refusal}},
            )
        return False
    if ask.full is True or ask.target_storage is not None:
        return True  # (a clone onto another storage is a copy)
    return refusal is not None


def _target_storage(template: TemplateFacts, ask: CloneAsk) -> str | None:
    name = ask.target_storage
    if name is None:
        return None
    storage = ask.node_storages.get(name)
    why = None
    if storage is None:
        why = f"node {ask.node.name} has no storage {name!r}"
    elif "images" not in storage.content:
        content = ",".join(sorted(storage.content)) or "none"
        why = f"storage {name!r} does not take VM images (content: {content})"
    elif not storage.enabled or not storage.active:
        why = f"storage {name!r} is {'disabled' if not storage.enabled else 'not active'} on {ask.node.name}"
    elif template.storage.shared and ask.node.id != template.home.id and not storage.shared:
        why = (
            f"storage {name!r} is local to {ask.node.name}: PVE clones a VM onto another node "
            'only onto shared storage ("can\'t clone to non-shared storage")'
        )
    if why is not None:
        raise Invalid(ErrorSlug.TARGET_STORAGE_UNUSABLE, why, {"fields": {"target_storage": why}})
    return name

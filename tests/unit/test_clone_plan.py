"""The clone planner (coordinator/clone_plan.py): linked or full from the storage and the
base volume's format as PVE's plugins decide it, a sync first where the node has no copy,
a shared-storage template cloned by its VM's node, and every refusal naming the field."""

from __future__ import annotations

import pytest

from coordinator.clone_plan import (
    CloneAsk,
    NodeRef,
    StorageFacts,
    TemplateFacts,
    linked_refusal,
    plan_clone,
    volume_format,
)
from coordinator.config import load
from coordinator.errors import Invalid
from coordinator.vmids import VMID_MAX, NoFreeVmid, clone_range, lowest_free
from shared.config import ConfigError
from shared.error_slugs import ErrorSlug

IMAGES = frozenset({"images"})
NODE1, NODE2 = NodeRef(1, "pve-node1"), NodeRef(2, "pve-node2")


def storage(name: str, type_: str, shared: bool = False, **kw: object) -> StorageFacts:
    return StorageFacts(name, type_, shared, kw.pop("content", IMAGES), **kw)  # type: ignore[arg-type]


LOCAL = storage("local", "dir")
LVM_THIN = storage("local-lvm", "lvmthin")
THICK = storage("thick", "lvm")
CEPH = storage("ceph-storage", "rbd", shared=True)
NFS = storage("nfs-templates", "nfs", shared=True)
ISO = storage("iso-only", "dir", content=frozenset({"iso"}))
ALL = {s.name: s for s in (LOCAL, LVM_THIN, THICK, CEPH, NFS, ISO)}


def template(s: StorageFacts, fmt: str = "raw", home: NodeRef = NODE1) -> TemplateFacts:
    return TemplateFacts(storage=s, volume_format=fmt, home=home)


def ask(
    node: NodeRef = NODE1, full: bool | None = None, target: str | None = None, vmid: int | None = 9000
) -> CloneAsk:
    return CloneAsk(node=node, full=full, target_storage=target, instance_vmid=vmid, node_storages=ALL)


@pytest.mark.parametrize(
    ("type_", "fmt", "links"),
    [
        ("dir", "raw", True),
        ("dir", "qcow2", True),
        ("dir", "vmdk", True),
        ("nfs", "qcow2", True),
        ("dir", "subvol", False),
        ("lvmthin", "", True),
        ("zfspool", "", True),
        ("rbd", "", True),
        ("btrfs", "raw", True),
        ("lvm", "", False),
        ("iscsi", "", False),
    ],
)
def test_linked_where_pves_plugins_can(type_: str, fmt: str, links: bool) -> None:
    assert (linked_refusal(type_, fmt) is None) is links


def test_the_volume_format_is_read_from_the_volume_id() -> None:
    assert volume_format("local:9000/base-9000-disk-0.qcow2") == "qcow2"
    assert volume_format("local-lvm:base-9000-disk-0") == ""
    assert volume_format("ceph-storage:base-9000-disk-0") == ""


def test_full_null_links_where_it_can_and_copies_elsewhere() -> None:
    assert plan_clone(template(LOCAL, "qcow2"), ask()).linked
    assert plan_clone(template(LVM_THIN, ""), ask()).linked
    plan = plan_clone(template(THICK, ""), ask())
    assert not plan.linked and plan.target_storage is None


def test_full_false_where_the_storage_cannot_is_refused_naming_why() -> None:
    with pytest.raises(Invalid) as refused:
        plan_clone(template(THICK, ""), ask(full=False))
    assert refused.value.error == ErrorSlug.LINKED_CLONE_UNSUPPORTED
    assert "LVM (thick)" in refused.value.message and "full" in refused.value.extra["fields"]


def test_a_target_storage_makes_a_full_clone_and_must_take_images_on_the_node() -> None:
    plan = plan_clone(template(LOCAL), ask(target="local-lvm"))
    assert not plan.linked and plan.target_storage == "local-lvm"
    for bad, words in (("iso-only", "does not take VM images"), ("nowhere", "has no storage")):
        with pytest.raises(Invalid) as refused:
            plan_clone(template(LOCAL), ask(full=True, target=bad))
        assert refused.value.error == ErrorSlug.TARGET_STORAGE_UNUSABLE and words in refused.value.message
    with pytest.raises(Invalid) as refused:
        plan_clone(template(LOCAL), ask(full=False, target="local-lvm"))
    assert refused.value.extra["fields"] == {"target_storage": "only with full: true (or null)"}
    disabled = CloneAsk(NODE1, True, "off", 9000, {"off": storage("off", "dir", enabled=False)})
    with pytest.raises(Invalid, match="disabled"):
        plan_clone(template(LOCAL), disabled)


def test_a_node_without_a_copy_gets_a_sync_first_if_it_has_the_storage() -> None:
    plan = plan_clone(template(LOCAL), ask(node=NODE2, vmid=None))
    assert plan.needs_sync and plan.source == NODE2 and plan.source_vmid is None and plan.target_node is None
    plan = plan_clone(template(LOCAL), ask(node=NODE2, vmid=9001))
    assert not plan.needs_sync and plan.source_vmid == 9001
    bare = CloneAsk(NODE2, None, None, None, {"local-lvm": LVM_THIN})
    with pytest.raises(Invalid) as refused:
        plan_clone(template(LOCAL), bare)
    assert refused.value.error == ErrorSlug.STORAGE_MISSING_ON_NODE


def test_a_shared_template_is_cloned_by_its_vms_node_with_a_target() -> None:
    plan = plan_clone(template(CEPH, "", home=NODE1), ask(node=NODE2, vmid=None))
    assert plan.linked and not plan.needs_sync and plan.source == NODE1 and plan.target_node == "pve-node2"
    here = plan_clone(template(NFS, "qcow2", home=NODE1), ask(node=NODE1))
    assert here.linked and here.target_node is None
    full_away = plan_clone(template(CEPH, "", home=NODE1), ask(node=NODE2, full=True, target="nfs-templates"))
    assert not full_away.linked and full_away.target_storage == "nfs-templates"


def test_a_shared_template_is_not_copied_onto_another_nodes_local_storage() -> None:
    with pytest.raises(Invalid) as refused:
        plan_clone(template(CEPH, "", home=NODE1), ask(node=NODE2, target="local-lvm"))
    assert "can't clone to non-shared storage" in refused.value.message
    # on its own node the local storage is fine
    assert plan_clone(template(CEPH, "", home=NODE1), ask(node=NODE1, target="local-lvm")).target_storage


def test_clone_vmids_come_from_their_range_or_from_pves_next_free_id() -> None:
    assert clone_range(5000, 5999, None) == (5000, 5999)
    assert clone_range(0, 0, 123) == (123, VMID_MAX)
    assert lowest_free({123, 124}, *clone_range(0, 0, 123)) == 125
    with pytest.raises(NoFreeVmid, match="clone_vmid_min/max"):
        lowest_free({5000, 5001}, 5000, 5001, "clone_vmid_min/max")


def test_the_clone_range_is_checked_against_the_templates() -> None:
    assert load(None, clone_vmid_min=20000, clone_vmid_max=29999).clone_vmid_min == 20000
    with pytest.raises(ConfigError, match="overlap"):
        load(None, clone_vmid_min=9500, clone_vmid_max=10500)
    with pytest.raises(ConfigError, match="range"):
        load(None, clone_vmid_min=50, clone_vmid_max=0)

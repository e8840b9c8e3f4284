"""What a cascade delete removes, in which order, and when it tries again."""

from __future__ import annotations

from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload
from coordinator.deletion_plan import (
    IMPORT_STOPPED,
    IMPORT_STOPPING,
    RECHECK_SECONDS,
    RETRY_MAX_SECONDS,
    Step,
    plan,
    retry_delay,
)


def _upload(uid: int, status: str, *, vmid: int | None = None, staged: str = "", error: str | None = None):  # type: ignore[no-untyped-def]
    return TemplateUpload(
        id=uid,
        status=status,
        vmid=vmid,
        staged_name=staged,
        error_message=error,
        import_node_id=1,
        import_node_name="pve-node1",
    )


def _instance(
    iid: int, node: int, vmid: int | None, *, shared: bool, primary: bool, status: str = "available"
):  # type: ignore[no-untyped-def]
    return TemplateInstance(
        id=iid,
        node_id=node,
        node_name=f"pve-node{node}",
        vmid=vmid,
        is_shared=shared,
        is_primary=primary,
        status=status,
    )


def _task(tid: int, node: int, epoch: int) -> TemplateSyncTask:
    return TemplateSyncTask(id=tid, target_node_id=node, target_node_name=f"pve-node{node}", epoch=epoch)


def test_a_shared_template_has_one_vm_to_delete_however_many_nodes_see_it() -> None:
    instances = [
        _instance(1, 1, 9001, shared=True, primary=True),
        _instance(2, 2, 9001, shared=True, primary=False),
        _instance(3, 3, 9001, shared=True, primary=False),
    ]
    assert plan(instances, [_upload(5, "imported")], []) == [Step("vm", 1, "pve-node1", 1, 9001)]


def test_a_local_template_loses_every_vm_its_staged_image_and_every_started_copy() -> None:
    instances = [
        _instance(1, 1, 9001, shared=False, primary=True),
        _instance(2, 2, 9002, shared=False, primary=False),
        _instance(3, 3, None, shared=False, primary=False, status="pending"),  # never got a VM
        _instance(4, 3, 9004, shared=False, primary=False, status="deleted"),  # gone already
    ]
    steps = plan(instances, [_upload(5, "imported", staged="u5.img")], [_task(7, 2, 1), _task(8, 3, 0)])
    assert [(s.kind, s.node_name, s.vmid) for s in steps] == [
        ("vm", "pve-node1", 9001),
        ("vm", "pve-node2", 9002),
        ("staged_image", "pve-node1", None),
        ("synced_copy", "pve-node2", None),  # task 8 never started: nothing on pve-node3
    ]
    assert steps[2].staged_name == "u5.img"
    assert [s.shown() for s in steps[:1]] == [{"node_name": "pve-node1", "what": "vm", "vmid": 9001}]


def test_an_import_cut_by_the_delete_is_stopped_first_and_blocks_its_node() -> None:
    uploads = [_upload(5, "failed", vmid=9005, staged="u5.img", error=IMPORT_STOPPING)]
    steps = plan([], uploads, [])
    assert [s.kind for s in steps] == ["stop_import", "failed_import_vm", "staged_image"]
    assert steps[0].blocks_its_node and not steps[1].blocks_its_node
    assert steps[0].shown()["what"] == "import" and steps[1].shown()["what"] == "vm"
    # Once stopped, it is not asked again.
    uploads[0].error_message = IMPORT_STOPPED
    assert [s.kind for s in plan([], uploads, [])] == ["failed_import_vm", "staged_image"]


def test_a_failed_imports_vm_is_not_deleted_twice_when_an_instance_owns_it() -> None:
    instances = [_instance(1, 1, 9001, shared=False, primary=True)]
    uploads = [_upload(5, "failed", vmid=9001), _upload(6, "failed", vmid=9006)]
    assert [(s.kind, s.vmid) for s in plan(instances, uploads, [])] == [
        ("vm", 9001),
        ("failed_import_vm", 9006),
    ]


def test_steps_say_what_and_where() -> None:
    assert Step("vm", 3, "pve-node3", 1, 9003).describe() == "deleting VM 9003 on pve-node3"
    assert (
        Step("synced_copy", 2, "pve-node2", 7).describe() == "removing the copy of sync task 7 on pve-node2"
    )
    assert Step("stop_import", 1, "pve-node1", 5).describe() == "stopping the import of upload 5 on pve-node1"


def test_waiting_for_a_part_looks_again_soon_and_errors_back_off() -> None:
    assert retry_delay(0, asked_a_part=False) == RECHECK_SECONDS
    assert retry_delay(7, asked_a_part=False) == RECHECK_SECONDS  # a long outage does not slow the look
    assert [retry_delay(n, asked_a_part=True) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_delay(30, asked_a_part=True) == RETRY_MAX_SECONDS


def test_a_failed_or_canceled_sync_tasks_cut_off_vm_is_deleted_unless_an_instance_owns_it() -> None:
    instances = [_instance(1, 2, 9002, shared=False, primary=False)]
    tasks = [
        TemplateSyncTask(
            id=7, target_node_id=3, target_node_name="pve-node3", epoch=1, status="failed", vmid=9007
        ),
        TemplateSyncTask(
            id=8, target_node_id=2, target_node_name="pve-node2", epoch=0, status="canceled", vmid=9002
        ),
        TemplateSyncTask(
            id=9, target_node_id=3, target_node_name="pve-node3", epoch=1, status="completed", vmid=9009
        ),
    ]
    steps = plan(instances, [], tasks)
    assert [(s.kind, s.node_name, s.ref, s.vmid) for s in steps] == [
        ("vm", "pve-node2", 1, 9002),
        ("failed_sync_vm", "pve-node3", 7, 9007),  # task 8's VMID is the instance's: deleted once
        ("synced_copy", "pve-node3", 7, None),
        ("synced_copy", "pve-node3", 9, None),
    ]
    assert steps[1].shown() == {"node_name": "pve-node3", "what": "vm", "vmid": 9007}

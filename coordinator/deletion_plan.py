"""What a cascade delete must remove, read from the rows; and when it tries again.

Pure: the job (coordinator/template_delete.py) loads the rows, asks for the steps, runs
them through the agents and records what is left. Each step is idempotent on its agent
(an absent VM or file counts as removed), so a step cut off by a coordinator stop is
simply done again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from coordinator.db.models import TemplateInstance, TemplateSyncTask, TemplateUpload
from shared.backoff import exponential

# The upload's error while its import still has to be stopped on its agent, then once it is.
IMPORT_STOPPING = "template deleted during its import; stopping the import"
IMPORT_STOPPED = "template deleted during its import"

Kind = Literal["stop_import", "vm", "failed_import_vm", "failed_sync_vm", "staged_image", "synced_copy"]
# What the API shows for each kind (a failed import's VM is a VM like any other to the user).
SHOWN = {
    "stop_import": "import",
    "vm": "vm",
    "failed_import_vm": "vm",
    "failed_sync_vm": "vm",
    "staged_image": "staged_image",
    "synced_copy": "synced_copy",
}
# Steps that go through PVE: they wait while the node's agent says PVE does not answer.
NEEDS_PVE = frozenset({"stop_import", "vm", "failed_import_vm", "failed_sync_vm"})

# Waiting for an agent or PVE to come back costs one database read per look: look often.
RECHECK_SECONDS = 2.0
# A part that answered with an error is asked again after 5, 10, 20, 40, 60, 60, ... s.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Step:
    kind: Kind
    node_id: int
    node_name: str
    # upload id (stop_import, failed_import_vm, staged_image), instance id (vm),
    # task id (failed_sync_vm, synced_copy)
    ref: int
    vmid: int | None = None
    staged_name: str = ""
    task_uid: str = ""  # synced_copy: what the target's agent keys the copy by

    @property
    def blocks_its_node(self) -> bool:
        """Nothing else on the node is touched until its import is stopped: the import
        could still make a VM, and it reads the staged image."""
        return self.kind == "stop_import"

    def describe(self) -> str:
        where = f"on {self.node_name}"
        if self.kind == "stop_import":
            return f"stopping the import of upload {self.ref} {where}"
        if self.kind in ("vm", "failed_import_vm", "failed_sync_vm"):
            return f"deleting VM {self.vmid} {where}"
        if self.kind == "staged_image":
            return f"removing the staged image of upload {self.ref} {where}"
        return f"removing the copy of sync task {self.ref} {where}"

    def shown(self) -> dict[str, object]:
        return {"node_name": self.node_name, "what": SHOWN[self.kind], "vmid": self.vmid}


def plan(
    instances: Iterable[TemplateInstance],
    uploads: Iterable[TemplateUpload],
    tasks: Iterable[TemplateSyncTask],
) -> list[Step]:
    """Every step still to do, imports to stop first."""
    uploads = list(uploads)
    steps = [
        Step("stop_import", u.import_node_id, u.import_node_name, u.id)
        for u in uploads
        if u.status == "failed" and u.error_message == IMPORT_STOPPING
    ]
    # One VM per (node that owns it, vmid): a shared-storage template has a single VM,
    # owned by the primary instance's node; the other instances are views of it.
    owners = [
        i
        for i in instances
        if i.status != "deleted" and i.vmid is not None and (i.is_primary or not i.is_shared)
    ]
    steps += [Step("vm", i.node_id, i.node_name, i.id, i.vmid) for i in owners]
    covered = {(i.node_id, i.vmid) for i in owners}
    # An import that failed after asking PVE for its VM (the create cut off, the template
    # conversion failed) may leave that VM behind with no instance pointing at it: an
    # upload's, or a failed or canceled sync task's (whose instance has no VMID).
    steps += [
        Step("failed_import_vm", u.import_node_id, u.import_node_name, u.id, u.vmid)
        for u in uploads
        if u.status == "failed" and u.vmid is not None and (u.import_node_id, u.vmid) not in covered
    ]
    tasks = list(tasks)
    steps += [
        Step("failed_sync_vm", t.target_node_id, t.target_node_name, t.id, t.vmid)
        for t in tasks
        if t.status in ("failed", "canceled")
        and t.vmid is not None
        and (t.target_node_id, t.vmid) not in covered
    ]
    steps += [
        Step("staged_image", u.import_node_id, u.import_node_name, u.id, staged_name=u.staged_name)
        for u in uploads
        if u.staged_name
    ]
    # Copies (whole or partial) that sync tasks left on their targets; epoch 0 never started.
    steps += [
        Step("synced_copy", t.target_node_id, t.target_node_name, t.id, task_uid=t.uid)
        for t in tasks
        if t.epoch > 0
    ]
    return steps


def retry_delay(attempts: int, asked_a_part: bool) -> float:
    """Seconds until the next attempt. ``attempts``: those in which a part answered with an
    error, this one included; ``asked_a_part``: whether this attempt got such an answer
    (else it only waited for agents or PVE to come back)."""
    if not asked_a_part:
        return RECHECK_SECONDS
    return exponential(attempts, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)

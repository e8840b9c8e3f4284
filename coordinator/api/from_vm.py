"""POST /templates/from-vm: a template made from a VM's disk (contract 6.3).

The upload's flow with the file replaced by an export (from_export.py): the node's agent says
first whether the VM, its disk and the snapshot will do (404, 409 for a running VM without a
snapshot, 400), so a bad request leaves nothing; the upload's file name is
``vm-<vmid>-<disk>[-<snapshot>].qcow2``. An export that fails is given up as a broken-off
upload is: its partial copy removed, the template row gone, a failed upload record kept with
the reason. The source VM is only read.

With ``template_id`` the disk becomes that template's next version (contract 6.1): on the
template's storage, rolled out as an uploaded version is (coordinator/api/versions.py); an
export that fails leaves the template as it was.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from coordinator.api.from_export import EXPORT_ERRORS, OnNodeBody, template_from_export
from coordinator.api.routing import Call, Routes
from coordinator.api.upload import UploadResult
from shared.messages.exports import DiskKey, ExportAsk, ExportSource, SnapshotName

routes = Routes("templates")


class FromVmBody(OnNodeBody):
    vmid: Annotated[int, Meta(ge=100, le=999999999)]
    disk: Annotated[DiskKey | None, Meta(description="default: the VM's boot disk")] = None
    snapshot: Annotated[
        SnapshotName | None, Meta(description="export the disk as it was at this snapshot (a qcow2 disk)")
    ] = None


def file_name(source: ExportSource) -> str:
    """The upload's file name: which disk of which VM (at which snapshot) it came from."""
    snap = f"-{source.snapshot}" if source.snapshot else ""
    return f"vm-{source.vmid}-{source.disk}{snap}.qcow2"


@routes.post(
    "/templates/from-vm",
    role="operator",
    body=FromVmBody,
    response=UploadResult,
    errors=EXPORT_ERRORS,
)
async def template_from_vm(call: Call) -> UploadResult:
    """Make a template from a VM's disk: the node's agent copies it (stopped VM, or at a
    snapshot) into staging, validates it like an upload, and it is imported as an upload is.

    The answer comes once the copy is staged and valid (with wait=true: after the import);
    its data is the upload's answer. The VM is never changed; a running VM without
    ``snapshot`` is a 409.
    """
    body: FromVmBody = call.body
    ask = ExportAsk(vmid=body.vmid, disk=body.disk, snapshot=body.snapshot)
    return await template_from_export(call, body, ask, file_name)

"""POST /templates/from-volume: a template made from a volume already on a PVE storage
(contract 6.5): an ``import`` content volume (``local:import/debian-13.qcow2``) or a VM's disk
image (``local:100/vm-100-disk-0.qcow2``, ``local-lvm:vm-100-disk-0``; its VM stopped).

The volume id is checked with an allowlist (shared/volume_id.py) before anything is asked;
the node's agent then asks its PVE whether the storage is there, lists the volume under its
content type, and takes its path and format from PVE (never from the request). The rest is
from-vm's flow (from_export.py): the volume is copied into staging, so a later change or
removal of it does not change the template, validated like an upload, imported and synced.
The volume is only read.
"""

from __future__ import annotations

from coordinator.api.from_export import EXPORT_ERRORS, OnNodeBody, template_from_export
from coordinator.api.routing import Call, Routes
from coordinator.api.upload import UploadResult
from shared.messages.exports import ExportAsk, ExportSource, VolumeName
from shared.volume_id import parse_volume_id

routes = Routes("templates")


class FromVolumeBody(OnNodeBody):
    volume: VolumeName


def file_name(source: ExportSource) -> str:
    """The upload's file name: the volume's file name, as a qcow2 (the copy's format)."""
    name = parse_volume_id(source.volume).volname.rpartition("/")[2]
    return f"{name.rsplit('.', 1)[0] if '.' in name else name}.qcow2"


@routes.post(
    "/templates/from-volume",
    role="operator",
    body=FromVolumeBody,
    response=UploadResult,
    errors=EXPORT_ERRORS,
)
async def template_from_volume(call: Call) -> UploadResult:
    """Make a template from a volume on a PVE storage the node sees: an import volume
    (qcow2, raw or vmdk) or a VM's disk image (the VM stopped). The node's agent copies it
    into staging, validates it like an upload, and it is imported as an upload is.

    The answer comes once the copy is staged and valid (with wait=true: after the import);
    its data is the upload's answer. An unknown storage or volume is a 404
    (``volume_not_found``), another content type or a malformed id a 400, a disk of a running
    VM a 409 (``vm_running``).
    """
    body: FromVolumeBody = call.body
    return await template_from_export(call, body, ExportAsk(volume=body.volume), file_name)

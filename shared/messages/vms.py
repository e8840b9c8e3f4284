"""Coordinator -> agent: the VMs of ours on a node (GET /v1/vms, GET /v1/vms/{vmid}) and
destroying one (DELETE /v1/vms/{vmid})."""

from __future__ import annotations

from typing import Any

from shared.validation import Model


class ListedVm(Model):
    vmid: int
    name: str
    lock: str | None
    template: bool
    journal_key: str | None  # the import the agent's VM journal holds for this VMID
    importing: bool


class VmListing(Model):
    node: str
    vms: list[ListedVm]


class VmConfigView(Model):
    vmid: int
    config: dict[str, Any]


class VmRemoved(Model, omit_defaults=True):
    """``key`` and ``how`` only when a VM was removed (``removed``)."""

    vmid: int
    removed: bool
    key: str | None = None  # the import that made it
    how: str | None = None  # why it was ours: its marker, or the VM journal

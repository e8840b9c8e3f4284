"""What the agent refuses in a clone request before PVE is asked (agent/cloner.py refusal)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.cloner import refusal, volume_storage
from shared.messages.clones import CloneRequest
from shared.validation import parse

OK: dict[str, Any] = {"key": "c3", "source_vmid": 9000, "vmid": 5000, "name": "web-1", "full": False}


def request(**change: Any) -> CloneRequest:
    return parse(CloneRequest, {**OK, **change})


def test_a_plain_request_is_taken() -> None:
    assert refusal(request()) is None
    assert refusal(request(full=True, target_storage="local")) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"description": "mine [pvesphere t1-u2]"}, "marker"),
        ({"description": "[pvesphere c3]"}, "marker"),
        ({"vmid": 9000}, "differ"),
        ({"target_storage": "local"}, "full clones"),
    ],
)
def test_refused(change: dict[str, Any], why: str) -> None:
    found = refusal(request(**change))
    assert found is not None and why in found


def test_a_description_that_only_mentions_pvesphere_is_fine() -> None:
    assert refusal(request(description="made by [pvesphere] for t1-u2")) is None


def test_new_volumes_of_a_clone_go_to_the_storage_of_its_template_disk() -> None:
    assert volume_storage({"scsi0": "local-lvm:base-9000-disk-0,size=2G"}) == "local-lvm"
    assert volume_storage({"scsi0": "local:9000/base-9000-disk-0.raw/5000/vm-5000-disk-0.qcow2"}) == "local"

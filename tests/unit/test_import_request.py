"""The agent's import endpoint re-checks what it is asked to run as root, whoever asks.

Over real HTTP against the agent's handler: a bad field is a 400 naming it, and no import
starts (the importer is a recorder here; the stack tests run real imports).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent import importer
from agent.appkeys import IMPORTER
from agent.pve_tasks import TaskLimit
from agent.routes import imports
from shared.messages.imports import ImportRequest

GOOD: dict[str, Any] = {
    "key": "t1-u1",
    "vmid": 9000,
    "staged_name": "upload-1-0123abcd.qcow2",
    "storage": "local-lvm",
    "name": "ubuntu-22.04",
    "description": "Ubuntu 22.04\n\tcloud image",
    "options": {
        "cores": 2,
        "onboot": True,
        "efidisk0": "local-lvm:1,efitype=4m",
        "ide2": "local-lvm:cloudinit",
    },
}


class Recorder(importer.Importer):
    def __init__(self) -> None:  # no PVE, no staging: nothing is imported here
        self.ops = {}
        self.stopping = False
        self.started: list[ImportRequest] = []

    def start(self, req: ImportRequest) -> importer.ImportOp:
        self.started.append(req)
        return importer.ImportOp(req=req, limit=TaskLimit(60), state="done")


@pytest.fixture
async def agent(aiohttp_client: Any) -> tuple[TestClient[Any, Any], Recorder]:
    app = web.Application()
    app[IMPORTER] = recorder = Recorder()
    app.router.add_post("/v1/imports", imports.start_import)
    return await aiohttp_client(app), recorder


async def test_a_good_request_starts_the_import(agent: tuple[TestClient[Any, Any], Recorder]) -> None:
    client, recorder = agent
    resp = await client.post("/v1/imports", json=GOOD)
    assert resp.status == 200, await resp.text()
    (req,) = recorder.started
    assert req.options == {
        "cores": "2",
        "onboot": "1",
        "efidisk0": "local-lvm:1,efitype=4m",
        "ide2": "local-lvm:cloudinit",
    }
    assert (req.name, req.storage, req.description) == ("ubuntu-22.04", "local-lvm", GOOD["description"])


async def test_a_stopping_agent_starts_no_import(agent: tuple[TestClient[Any, Any], Recorder]) -> None:
    client, recorder = agent
    recorder.stopping = True
    resp = await client.post("/v1/imports", json=GOOD)
    assert resp.status == 503 and (await resp.json())["error"] == "agent_stopping"
    assert recorder.started == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"options": {"args": "-S"}}, "vm_config key 'args' is not allowed"),
        ({"options": {"hookscript": "local:snippets/x.pl"}}, "vm_config key 'hookscript' is not allowed"),
        (
            {"options": {"sata1": "local-lvm:0,import-from=/etc/pvesphere/agent.token"}},
            "vm_config sata1: 'import-from' is not allowed",
        ),
        ({"options": {"virtio1": "/tmp/x"}}, "vm_config key 'virtio1' is not allowed"),
        ({"options": {"ciuser": "a\x00b"}}, "vm_config ciuser must not contain control characters"),
        (
            {"options": {"efidisk0": "local:1,efitype=4m"}},
            "vm_config efidisk0: must be allocated on the template's storage 'local-lvm', not 'local'",
        ),
        ({"description": "one\x00two"}, "description must not contain control characters (U+0000"),
        ({"name": "vm\x00"}, "name must not contain control characters (U+0000"),
        ({"name": "two words"}, "name value does not look like a valid DNS name"),
        ({"storage": "local-lvm\n"}, "storage is not a PVE storage id (got 'local-lvm\\n')"),
        ({"staged_name": "upload-1-0123abcd.qcow2\n"}, "staged_name is not a staged image name"),
        ({"staged_name": "../../etc/shadow"}, "staged_name is not a staged image name"),
        ({"key": "t1-u1\n"}, "key has an invalid format"),
    ],
)
async def test_a_bad_field_is_a_400_naming_it_and_nothing_starts(
    agent: tuple[TestClient[Any, Any], Recorder], change: dict[str, Any], named: str
) -> None:
    client, recorder = agent
    resp = await client.post("/v1/imports", json={**GOOD, **change})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_request"
    assert named in body["message"], body["message"]
    assert recorder.started == []

"""Clones through a node's agent (POST /v1/clones, agent/cloner.py), against real agents and
the emulator: templates made by real uploads, every clone a PVE clone task, and what the
node is left with read from the emulator's state as an administrator would see it.

The coordinator's side of clones is not involved: these call the agent as the coordinator
does (tests/support/agents.py), so they run on SQLite only.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from msgspec.structs import replace

from agent.client import AgentError
from demo.stack import Stack
from shared.messages.clones import CloneRequest, CloneView
from shared.pve_api import open_https
from shared.text_fields import Description, StorageId, VmName
from shared.vm_config import VmConfig
from tests.conftest import own_stack
from tests.support import images
from tests.support.agents import call_agent
from tests.support.api import Api
from tests.support.uploads import emulator, storage_id, upload, vm_anywhere, vm_conf, wait_for, wait_import

NODE = "pve-node1"
OTHER = "pve-node2"
CLONE_WAIT = 120.0
_keys = itertools.count(os.getpid() % 1000 * 1000 + 1)
_vmids = itertools.count(5000 + os.getpid() % 100 * 30)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(request, tmp_path_factory, "clones", "sqlite")


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    return Api(stack.api, stack.admin_token)


@pytest.fixture(scope="module")
def templates(stack: Stack, api: Api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, int]]:
    """storage name -> (node, VMID) of one template of ours there, each made by an upload:
    a 32 MiB raw disk with 24 MiB of data (a full clone copies it with qemu-img)."""
    image = images.raw_with_data(tmp_path_factory.mktemp("img") / "disk.raw", 32, 24)
    made: dict[str, tuple[str, int]] = {}
    for name in ("local-lvm", "local", "ceph-storage", "nfs-templates"):
        node = None if name in ("ceph-storage", "nfs-templates") else NODE
        reply = upload(api, stack, image, f"clone-src-{name}", storage_id(api, stack, name, node)).ok()
        d = wait_import(api, reply["template_id"])
        assert d["upload_info"]["status"] == "imported", d
        instance = next(i for i in d["instances"] if i["status"] == "available")
        made[name] = (instance["node_name"], int(instance["vmid"]))
    return made


def pve(stack: Stack) -> Any:
    """The emulated cluster's API as root's token (an administrator's own calls)."""
    token = stack.pve_token()
    return open_https(token["api_url"], token["token_id"], token["secret"], token["ca_file"], 30)


def request(source: tuple[str, int], **fields: Any) -> CloneRequest:
    vmid = next(_vmids)
    values: dict[str, Any] = {
        "key": f"c{next(_keys)}",
        "source_vmid": source[1],
        "vmid": vmid,
        "name": VmName(f"clone-{vmid}"),
        "full": False,
    }
    values.update(fields)
    return CloneRequest(**values)


def start(stack: Stack, node: str, req: CloneRequest) -> CloneView:
    return call_agent(stack, node, lambda agent: agent.start_clone(req))


def view(stack: Stack, node: str, key: str) -> CloneView:
    return call_agent(stack, node, lambda agent: agent.get_clone(key))


def finished(stack: Stack, node: str, key: str) -> CloneView:
    return wait_for(
        lambda: (v := view(stack, node, key)).state != "running" and v, CLONE_WAIT, f"clone {key} ended"
    )


def clone(stack: Stack, source: tuple[str, int], **fields: Any) -> tuple[CloneRequest, CloneView]:
    req = request(source, **fields)
    start(stack, source[0], req)
    return req, finished(stack, source[0], req.key)


def description(stack: Stack, node: str, vmid: int) -> str:
    path = stack.pvesim_dir / "nodes" / node / "qemu-server" / f"{vmid}.conf"
    return "\n".join(
        urllib.parse.unquote(line[1:]) for line in path.read_text().splitlines() if line[:1] == "#"
    )


def volumes_of(stack: Stack, vmid: int) -> list[Path]:
    """Every file of the emulator's storages that belongs to VM ``vmid``."""
    return sorted(
        p for p in stack.pvesim_dir.rglob(f"*vm-{vmid}-*") if "qemu-server" not in p.parts and p.is_file()
    )


def refused_delete(stack: Stack, node: str, vmid: int, prefix: str) -> AgentError:
    with pytest.raises(AgentError) as refused:
        call_agent(stack, node, lambda agent: agent.delete_vm(vmid, prefix))
    return refused.value


def assert_users_vm(stack: Stack, node: str, req: CloneRequest, template_id_prefix: str = "t") -> None:
    """A finished clone is the user's VM: no marker; no key prefix of ours takes it."""
    assert "[pvesphere" not in description(stack, node, req.vmid)
    for prefix in (req.key, "t", template_id_prefix, "c"):
        err = refused_delete(stack, node, req.vmid, prefix)
        assert (err.status, err.error) == (409, "not_ours")
    assert vm_anywhere(stack, req.vmid) == [node]


def test_linked_clone_on_lvmthin(stack: Stack, templates: dict[str, tuple[str, int]]) -> None:
    source = templates["local-lvm"]
    req, done = clone(stack, source, description=Description("web tier\nsecond line"))
    assert (done.state, done.linked, done.progress, done.error) == ("done", True, 100.0, None)
    conf = vm_conf(stack, NODE, req.vmid)
    assert conf is not None
    assert conf["name"] == req.name and "template" not in conf and "lock" not in conf
    assert conf["scsi0"].startswith(f"local-lvm:vm-{req.vmid}-disk-0,")
    assert description(stack, NODE, req.vmid) == "web tier\nsecond line"
    assert_users_vm(stack, NODE, req)
    # the same key again: the finished clone, not another one
    again = start(stack, NODE, req)
    assert (again.state, again.vmid) == ("done", req.vmid)


def test_linked_clone_on_dir_is_a_qcow2_overlay(stack: Stack, templates: dict[str, tuple[str, int]]) -> None:
    source = templates["local"]
    req, done = clone(stack, source)
    assert done.state == "done", done
    conf = vm_conf(stack, NODE, req.vmid)
    assert conf is not None
    base = f"{source[1]}/base-{source[1]}-disk-0.raw"
    assert conf["scsi0"].startswith(f"local:{base}/{req.vmid}/vm-{req.vmid}-disk-0.qcow2,")
    overlay = stack.pvesim_dir / "nodes" / NODE / "storage" / "local" / "images" / str(req.vmid)
    info = images.info(overlay / f"vm-{req.vmid}-disk-0.qcow2", "qcow2")
    assert info["backing-filename"] == f"../{base}"
    assert_users_vm(stack, NODE, req)


def test_full_clone_reports_progress_and_goes_to_another_storage(
    stack: Stack, templates: dict[str, tuple[str, int]]
) -> None:
    source = templates["local-lvm"]
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 6 << 20})  # 24 MiB: ~4 s
    try:
        req = request(source, full=True, target_storage=StorageId("local"), image_size=32 << 20)
        first = start(stack, NODE, req)
        assert (first.state, first.linked) == ("running", False)
        seen: list[float] = []

        def progressed() -> CloneView | None:
            v = view(stack, NODE, req.key)
            seen.append(v.progress)
            return v if v.state != "running" else None

        done = wait_for(progressed, CLONE_WAIT, "full clone")
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    assert done.state == "done", done
    assert any(0 < p < 100 for p in seen), seen  # from qemu-img's lines in the task log
    assert seen == sorted(seen)
    conf = vm_conf(stack, NODE, req.vmid)
    assert conf is not None and conf["scsi0"].startswith(f"local:{req.vmid}/vm-{req.vmid}-disk-0.raw,")
    disk = stack.pvesim_dir / "nodes" / NODE / "storage" / "local" / "images" / str(req.vmid)
    assert "backing-filename" not in images.info(disk / f"vm-{req.vmid}-disk-0.raw", "raw")
    assert_users_vm(stack, NODE, req)


@pytest.mark.parametrize("storage", ["ceph-storage", "nfs-templates"])
def test_shared_template_cloned_onto_another_node(
    stack: Stack, templates: dict[str, tuple[str, int]], storage: str
) -> None:
    source = templates[storage]
    target = next(n for n in stack.node_names() if n != source[0])
    options = VmConfig.parse({"memory": 1536, "tags": "web"})
    req, done = clone(stack, source, target_node=target, options=options)
    assert (done.state, done.linked) == ("done", True), done
    assert vm_anywhere(stack, req.vmid) == [target]
    conf = vm_conf(stack, target, req.vmid)
    assert conf is not None and conf["memory"] == "1536" and conf["tags"] == "web"
    assert_users_vm(stack, target, req)


def test_local_template_is_not_cloned_onto_another_node(
    stack: Stack, templates: dict[str, tuple[str, int]]
) -> None:
    req, done = clone(stack, templates["local-lvm"], target_node=OTHER)
    assert done.state == "failed" and done.error_kind == "pve_error", done
    assert "can't clone VM to node" in (done.error or "")
    assert vm_anywhere(stack, req.vmid) == [] and volumes_of(stack, req.vmid) == []


def test_cloud_init_options_are_applied(stack: Stack, templates: dict[str, tuple[str, int]]) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPpYRSUXvtcCu0pyFUf8hlMnhW0z3x3nm8BFNSR4tvHV alice@example"
    options = VmConfig.parse(
        {
            "ide2": "local-lvm:cloudinit",
            "ciuser": "alice",
            "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1",
            "nameserver": "10.0.0.1",
            "sshkeys": urllib.parse.quote(key, safe=""),
            "cores": 2,
        }
    )
    req, done = clone(stack, templates["local-lvm"], options=options)
    assert done.state == "done", done
    conf = vm_conf(stack, NODE, req.vmid)
    assert conf is not None
    assert conf["ciuser"] == "alice" and conf["ipconfig0"] == "ip=10.0.0.5/24,gw=10.0.0.1"
    assert conf["cores"] == "2" and conf["nameserver"] == "10.0.0.1"
    assert conf["ide2"].startswith(f"local-lvm:vm-{req.vmid}-cloudinit,") and "media=cdrom" in conf["ide2"]
    assert urllib.parse.unquote(conf["sshkeys"]).strip() == key
    assert_users_vm(stack, NODE, req)


def test_cloud_init_drive_elsewhere_is_refused(stack: Stack, templates: dict[str, tuple[str, int]]) -> None:
    options = VmConfig.parse({"ide2": "local:cloudinit"})
    req, done = clone(stack, templates["local-lvm"], options=options)
    assert (done.state, done.error_kind) == ("failed", "bad_request"), done
    assert vm_anywhere(stack, req.vmid) == []


def test_taken_vmid_is_vmid_taken_and_left_alone(stack: Stack, templates: dict[str, tuple[str, int]]) -> None:
    req = request(templates["local-lvm"])
    # an administrator's VM at that VMID, on another node: VMIDs are cluster-wide
    pve(stack).nodes(OTHER).qemu.post(vmid=req.vmid, name="admins-vm", memory=512)
    wait_for(lambda: vm_conf(stack, OTHER, req.vmid) is not None, 30, "the administrator's VM")
    start(stack, NODE, req)
    done = finished(stack, NODE, req.key)
    assert (done.state, done.error_kind) == ("failed", "vmid_taken"), done
    assert vm_anywhere(stack, req.vmid) == [OTHER]
    assert vm_conf(stack, OTHER, req.vmid)["name"] == "admins-vm"  # type: ignore[index]
    assert [p.name for p in volumes_of(stack, req.vmid)] == []


def test_a_template_not_ours_is_not_cloned(stack: Stack) -> None:
    api = pve(stack)
    vmid = next(_vmids)
    upid = api.nodes(NODE).qemu.post(
        vmid=vmid, name="admins-template", scsi0="local-lvm:0.01", description="mine"
    )
    wait_for(lambda: api.nodes(NODE).tasks(upid).status.get()["status"] == "stopped", 30, "create")
    upid = api.nodes(NODE).qemu(vmid).template.post()
    wait_for(lambda: api.nodes(NODE).tasks(upid).status.get()["status"] == "stopped", 30, "template")
    for source in ((NODE, vmid), (NODE, 99999)):  # not ours; not there at all
        req, done = clone(stack, source)
        assert (done.state, done.error_kind) == ("failed", "bad_request"), done
        assert vm_anywhere(stack, req.vmid) == []
    assert vm_conf(stack, NODE, vmid)["template"] == "1"  # type: ignore[index]


def test_cancel_mid_full_clone_leaves_no_vm(stack: Stack, templates: dict[str, tuple[str, int]]) -> None:
    source = templates["local-lvm"]
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 1 << 20})  # 24 MiB: ~24 s
    try:
        req = request(source, full=True)
        start(stack, NODE, req)
        wait_for(lambda: view(stack, NODE, req.key).progress > 0, 60, "copy under way")
        assert vm_conf(stack, NODE, req.vmid) is not None  # PVE's clone is making it
        ended = call_agent(stack, NODE, lambda agent: agent.cancel_clone(req.key, "changed my mind"))
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    assert (ended.state, ended.error_kind) == ("failed", "canceled"), ended
    assert vm_anywhere(stack, req.vmid) == [] and volumes_of(stack, req.vmid) == []


def test_canceling_one_of_two_clones_of_a_template_stops_only_that_one(
    stack: Stack, templates: dict[str, tuple[str, int]]
) -> None:
    """PVE names both clone tasks after the template: the agent tells them apart by their log."""
    source = templates["local-lvm"]
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 1 << 20})  # 24 MiB: ~24 s
    try:
        kept, dropped = request(source, full=True), request(source, full=True)
        start(stack, NODE, kept)
        wait_for(lambda: view(stack, NODE, kept.key).progress > 0, 60, "first copy under way")
        start(stack, NODE, dropped)
        wait_for(lambda: view(stack, NODE, dropped.key).progress > 0, 60, "second copy under way")
        assert view(stack, NODE, kept.key).state == "running"  # both copy now
        ended = call_agent(stack, NODE, lambda agent: agent.cancel_clone(dropped.key, "one is enough"))
        assert (ended.state, ended.error_kind) == ("failed", "canceled"), ended
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    assert finished(stack, NODE, kept.key).state == "done"
    assert vm_anywhere(stack, dropped.vmid) == [] and volumes_of(stack, dropped.vmid) == []
    assert vm_anywhere(stack, kept.vmid) == [NODE]


def test_agent_restart_mid_clone_then_the_same_key_makes_it_again(
    stack: Stack, templates: dict[str, tuple[str, int]]
) -> None:
    source = templates["local-lvm"]
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 1 << 20})
    try:
        req = request(source, full=True)
        start(stack, NODE, req)
        wait_for(lambda: view(stack, NODE, req.key).progress > 0, 60, "copy under way")
        stack.agents[NODE].kill()
        stack.start_agent(NODE)
        stack.wait_agent_live(NODE)
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    with pytest.raises(AgentError) as forgotten:
        view(stack, NODE, req.key)
    assert forgotten.value.error == "clone_not_found"
    start(stack, NODE, req)  # what a restarted coordinator does
    done = finished(stack, NODE, req.key)
    assert done.state == "done", done
    assert_users_vm(stack, NODE, req)
    assert len(volumes_of(stack, req.vmid)) == 1


HOSTILE: list[dict[str, Any]] = [
    {"key": "t1-u1"},
    {"key": "c1\n"},
    {"vmid": 5},
    {"name": "no spaces allowed"},
    {"name": "-leading-dash"},
    {"description": "mine\n[pvesphere t1-u1]"},
    {"description": "[pvesphere c9]"},
    {"options": {"args": "-monitor stdio"}},
    {"options": {"scsi0": "local-lvm:1"}},
    {"options": {"hookscript": "local:snippets/x.pl"}},
    {"target_storage": "local"},  # a linked clone stays on the template's storage
    {"target_node": "../etc"},
    {"target_storage": "local;rm"},
    {"source_vmid": 5999},
    {"full": "yes"},
    {"image_size": -1},
]


@pytest.mark.parametrize("change", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_bodies_are_400(stack: Stack, change: dict[str, Any]) -> None:
    # no VM 99999 anywhere: a body taken by mistake would fail, never clone a template
    body = {"key": "c77", "source_vmid": 99999, "vmid": 5999, "name": "ok", "full": False, **change}

    async def post() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=stack.client_tls())) as session:
            headers = {"Authorization": f"Bearer {stack.agent_credential(NODE)}"}
            async with session.post(stack.agent_url(NODE) + "/v1/clones", json=body, headers=headers) as resp:
                return resp.status, await resp.json()

    status, answer = asyncio.run(post())
    assert (status, answer["error"]) == (400, "invalid_request"), answer
    assert vm_anywhere(stack, 5999) == []


def test_same_key_for_another_vmid_while_running_is_409(
    stack: Stack, templates: dict[str, tuple[str, int]]
) -> None:
    source = templates["local-lvm"]
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 2 << 20})
    try:
        req = request(source, full=True)
        start(stack, NODE, req)
        with pytest.raises(AgentError) as busy:
            start(stack, NODE, replace(req, vmid=req.vmid + 1))
        assert (busy.value.status, busy.value.error) == (409, "vm_busy")
        assert start(stack, NODE, req).vmid == req.vmid  # the same request: the same clone
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    assert finished(stack, NODE, req.key).state == "done"

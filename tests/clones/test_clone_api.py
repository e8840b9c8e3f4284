"""Clones through the coordinator's API (POST /templates/{id}/clone, GET /clones, GET
/templates/resolve), against the real stack: templates made by real uploads, every clone a
PVE clone task run by an agent, what it made read from the emulator's state as an
administrator would see it.

One template per storage kind is made once per stack and shared by the tests: a local one on
LVM-thin (linked clones of its base volume), one on the `local` directory storage (cloned on
another node through a sync task) and one on Ceph RBD (shared: cloned onto another node by
its VM's node).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from shared.pve_api import open_https
from tests.support import images
from tests.support.api import Api, Reply
from tests.support.uploads import (
    emulator,
    node_ids,
    storage_id,
    upload,
    vm_anywhere,
    vm_conf,
    wait_for,
    wait_import,
)

NODE1, NODE2, NODE3 = "pve-node1", "pve-node2", "pve-node3"
CLONE_WAIT = 120.0
# (stack id, storage) -> template id: made once per stack, shared by the module's tests.
_TEMPLATES: dict[tuple[int, str], int] = {}
_image: list[Path] = []


@pytest.fixture
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 MiB raw disk with 24 MiB of data (a full clone copies it with qemu-img)."""
    if not _image:
        _image.append(images.raw_with_data(tmp_path_factory.mktemp("clone-img") / "disk.raw", 32, 24))
    return _image[0]


def template(stack: Stack, api: Api, image: Path, storage: str) -> int:
    """The stack's template on ``storage`` (on pve-node1 unless shared), imported."""
    key = (id(stack), storage)
    if key not in _TEMPLATES:
        node = None if storage == "ceph-storage" else NODE1
        name = f"clone-api-{storage}-{stack.s.database_url and 'm' or 's'}-{int(time.time())}"
        template_id = upload(api, stack, image, name, storage_id(api, stack, storage, node)).ok()[
            "template_id"
        ]
        assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
        _TEMPLATES[key] = template_id
    return _TEMPLATES[key]


def clone(api: Api, template_id: int, **body: Any) -> Reply:
    return api.post(f"/templates/{template_id}/clone", json=body)


def finished(api: Api, clone_id: int, seen: list[str] | None = None) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        data: dict[str, Any] = api.get(f"/clones/{clone_id}").ok()
        if seen is not None and (not seen or seen[-1] != data["status"]):
            seen.append(data["status"])
        return data if data["status"] in ("completed", "failed") else None

    result: dict[str, Any] = wait_for(ended, CLONE_WAIT, f"clone {clone_id} ended")
    return result


def unique_name(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**9}"


@pytest.mark.mariadb
def test_linked_and_full_clones_on_the_templates_node(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "local-lvm")
    nodes = node_ids(api, stack)
    name = unique_name("web")
    started = clone(
        api, tpl, node_id=nodes[NODE1], name=name, vm_config={"memory": 1024, "ciuser": "admin"}
    ).ok()
    assert started["status"] == "pending" and started["template_id"] == tpl and started["version"] == 1
    assert started["node"] == {"node_id": nodes[NODE1], "node_name": NODE1} and started["linked"] is True
    linked = finished(api, started["clone_id"])
    assert linked["status"] == "completed", linked
    assert linked["linked"] is True and linked["progress"] == 100 and linked["finished_at"]
    conf = vm_conf(stack, NODE1, linked["vmid"])
    assert (
        conf is not None and conf["name"] == name and conf["memory"] == "1024" and conf["ciuser"] == "admin"
    )
    assert "template" not in conf  # a VM, not a template
    assert conf["scsi0"].startswith(f"local-lvm:vm-{linked['vmid']}-disk-")  # a thin snapshot of the base

    full = finished(
        api, clone(api, tpl, node_id=nodes[NODE1], name=unique_name("db"), full=True).ok()["clone_id"]
    )
    assert full["status"] == "completed" and full["linked"] is False, full
    full_conf = vm_conf(stack, NODE1, full["vmid"])
    assert full_conf is not None and full_conf["scsi0"].startswith(f"local-lvm:vm-{full['vmid']}-disk-")
    assert full["vmid"] != linked["vmid"]


def test_a_clone_on_a_node_without_a_copy_follows_its_sync_task(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "local")
    nodes = node_ids(api, stack)
    started = clone(api, tpl, node_id=nodes[NODE2], name=unique_name("synced")).ok()
    assert started["status"] == "waiting_for_sync" and started["sync_task_id"], started
    seen = [started["status"]]
    done = finished(api, started["clone_id"], seen)
    assert done["status"] == "completed", done
    assert seen[0] == "waiting_for_sync" and seen[-1] == "completed"
    task = api.get(f"/templates/sync-tasks/{started['sync_task_id']}").ok()
    assert task["status"] == "completed" and task["target_node"]["node_name"] == NODE2
    assert vm_anywhere(stack, done["vmid"]) == [NODE2]
    # The node has its copy now: the next clone there starts at once, without a sync.
    again = clone(api, tpl, node_id=nodes[NODE2], name=unique_name("synced")).ok()
    assert again["status"] == "pending" and again["sync_task_id"] is None
    assert finished(api, again["clone_id"])["status"] == "completed"


def test_a_clone_whose_sync_is_canceled_fails_with_the_syncs_reason(
    stack: Stack, api: Api, image: Path
) -> None:
    tpl = template(stack, api, image, "local")
    stack.agents[NODE3].stop()  # the copy to pve-node3 cannot start meanwhile
    try:
        started = clone(api, tpl, node_id=node_ids(api, stack)[NODE3], name=unique_name("orphan")).ok()
        assert started["status"] == "waiting_for_sync"
        api.post(f"/templates/sync-tasks/{started['sync_task_id']}/cancel").ok()
        failed = finished(api, started["clone_id"])
    finally:
        stack.start_agent(NODE3)
    assert failed["status"] == "failed" and failed["vmid"] is None, failed
    assert f"sync task {started['sync_task_id']} to {NODE3} canceled" in failed["error_message"]


def test_a_shared_storage_template_is_cloned_onto_another_node(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "ceph-storage")
    nodes = node_ids(api, stack)
    home = api.get(
        "/templates/resolve", params={"cluster_id": stack.cluster_id, "name": _name(api, tpl), "node": NODE3}
    ).ok()
    away = NODE2 if home["node_name"] != NODE2 else NODE3
    done = finished(api, clone(api, tpl, node_id=nodes[away], name=unique_name("ceph")).ok()["clone_id"])
    assert done["status"] == "completed" and done["linked"] is True, done
    assert done["node"]["node_name"] == away and vm_anywhere(stack, done["vmid"]) == [away]
    assert done["sync_task_id"] is None


def _name(api: Api, template_id: int) -> str:
    return str(api.get(f"/templates/{template_id}").ok()["template_name"])


def test_resolve_answers_the_vmid_to_clone_on_a_node(stack: Stack, api: Api, image: Path) -> None:
    local = template(stack, api, image, "local-lvm")
    shared = template(stack, api, image, "ceph-storage")
    params = {"cluster_id": stack.cluster_id, "name": _name(api, local), "node": NODE1}
    found = api.get("/templates/resolve", params=params).ok()
    instance = next(
        i for i in api.get(f"/templates/{local}/instances").ok()["instances"] if i["node_name"] == NODE1
    )
    assert found == {
        "template_id": local,
        "version": 1,
        "node_id": node_ids(api, stack)[NODE1],
        "node_name": NODE1,
        "vmid": instance["vmid"],
        "storage_name": "local-lvm",
        "status": "available",
    }
    assert api.get("/templates/resolve", params={**params, "version": 1}).ok() == found
    missing = api.get("/templates/resolve", params={**params, "node": NODE3})
    assert missing.status == 404 and missing.error == "not_on_node", missing.body
    unknown = api.get("/templates/resolve", params={**params, "name": "no-such-template"})
    assert unknown.status == 404 and unknown.error == "template_not_found"
    assert api.get("/templates/resolve", params={**params, "version": 2}).error == "version_not_found"
    assert api.get("/templates/resolve", params={**params, "node": "nowhere"}).error == "node_not_found"
    # A shared-storage template: every node resolves to its one VM, on the node that holds it.
    homes = {
        api.get("/templates/resolve", params={**params, "name": _name(api, shared), "node": n}).ok()[
            "node_name"
        ]
        for n in (NODE1, NODE2, NODE3)
    }
    assert len(homes) == 1
    assert api.get("/templates/resolve", params={"cluster_id": stack.cluster_id}).status == 400


@pytest.mark.mariadb
def test_clones_are_listed_with_filters_and_pages(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "local-lvm")
    nodes = node_ids(api, stack)
    ids = [clone(api, tpl, node_id=nodes[NODE1], name=unique_name("list")).ok()["clone_id"] for _ in range(3)]
    for clone_id in ids:
        assert finished(api, clone_id)["status"] == "completed"
    mine = api.get("/clones", params={"template_id": tpl, "page_size": 100}).ok()
    assert {c["clone_id"] for c in mine["list"]} >= set(ids) and mine["total"] == len(mine["list"])
    assert [c["clone_id"] for c in mine["list"]] == sorted(
        (c["clone_id"] for c in mine["list"]), reverse=True
    )
    page = api.get("/clones", params={"template_id": tpl, "page": 2, "page_size": 1}).ok()
    assert page["total"] == mine["total"] and page["list"] == mine["list"][1:2]
    on_node3 = api.get("/clones", params={"node_id": nodes[NODE3]}).ok()
    assert all(c["node"]["node_name"] == NODE3 for c in on_node3["list"])
    failed = api.get("/clones", params={"template_id": tpl, "status": "failed"}).ok()
    assert not {c["clone_id"] for c in failed["list"]} & set(ids)
    assert api.get("/clones", params={"status": "bogus"}).status == 400
    assert api.get("/clones/999999999").error == "clone_not_found"
    # Times as everywhere in the API: UTC, whole seconds, "Z" (listed and one by one).
    one = api.get(f"/clones/{ids[0]}").ok()
    for shown in (*mine["list"], one):
        for at in (shown["created_at"], shown["finished_at"]):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", at), shown


@pytest.mark.mariadb
def test_clones_asked_for_at_once_get_a_vmid_each(stack: Stack, api: Api, image: Path) -> None:
    """Allocated side by side (two run at once on the node): the clone's unique VMID key
    sends a loser of the race to the next free one."""
    tpl = template(stack, api, image, "local-lvm")
    node = node_ids(api, stack)[NODE1]
    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(lambda i: clone(api, tpl, node_id=node, name=unique_name(f"at-once{i}")), range(4))
        )
    done = [finished(api, r.ok()["clone_id"]) for r in replies]
    assert [d["status"] for d in done] == ["completed"] * 4, done
    assert len({d["vmid"] for d in done}) == 4


def test_a_vmid_taken_meanwhile_is_replaced_by_another(stack: Stack, api: Api, image: Path) -> None:
    """PVE answers the clone call "config file already exists" once (as when someone took
    the VMID between the choice and the clone): the job picks the next free one."""
    tpl = template(stack, api, image, "local-lvm")
    source = api.get(f"/templates/{tpl}/instances").ok()["instances"][0]["vmid"]
    emulator(
        stack,
        "POST",
        "/pvesim/faults",
        {
            "kind": "http",
            "method": "POST",
            "path": f"/nodes/{NODE1}/qemu/{source}/clone",
            "status": 500,
            "message": "unable to create VM: config file already exists",
            "times": 1,
        },
    )
    try:
        done = finished(
            api,
            clone(api, tpl, node_id=node_ids(api, stack)[NODE1], name=unique_name("taken")).ok()["clone_id"],
        )
    finally:
        emulator(stack, "DELETE", "/pvesim/faults")
    assert done["status"] == "completed", done
    log = (stack.base / "logs" / "coordinator.log").read_text()
    assert f"clone {done['clone_id']}: VMID {done['vmid'] - 1} was taken meanwhile; choosing another" in log
    assert vm_anywhere(stack, done["vmid"]) == [NODE1] and vm_anywhere(stack, done["vmid"] - 1) == []


def test_a_clone_that_fails_in_pve_leaves_no_vm(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "local-lvm")
    emulator(stack, "POST", "/pvesim/faults", {"type": "qmclone", "message": "storage went away", "times": 1})
    try:
        failed = finished(
            api,
            clone(api, tpl, node_id=node_ids(api, stack)[NODE1], name=unique_name("bad"), full=True).ok()[
                "clone_id"
            ],
        )
    finally:
        emulator(stack, "DELETE", "/pvesim/faults")
    assert failed["status"] == "failed" and "storage went away" in failed["error_message"], failed
    assert failed["vmid"] and vm_anywhere(stack, failed["vmid"]) == []


def test_bad_clone_requests_are_refused_naming_why(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "local-lvm")
    nodes = node_ids(api, stack)
    before = api.get("/clones", params={"page_size": 1}).ok()["total"]
    ok_body = {"node_id": nodes[NODE1], "name": "fine"}
    assert clone(api, 999999999, **ok_body).error == "template_not_found"
    assert clone(api, tpl, **{**ok_body, "node_id": 999999999}).error == "node_not_found"
    bad_name = clone(api, tpl, **{**ok_body, "name": "no_underscores"})
    assert bad_name.status == 400 and "name" in bad_name.data["fields"], bad_name.body
    assert clone(api, tpl, **{**ok_body, "name": "-dash"}).status == 400
    taken_vmid = api.get(f"/templates/{tpl}/instances").ok()["instances"][0]["vmid"]
    taken = clone(api, tpl, **ok_body, vmid=taken_vmid)
    assert taken.status == 409 and taken.error == "vmid_taken", taken.body
    no_storage = clone(api, tpl, **ok_body, full=True, target_storage="nope")
    assert no_storage.status == 400 and no_storage.error == "target_storage_unusable"
    assert "target_storage" in no_storage.data["fields"]
    linked_elsewhere = clone(api, tpl, **ok_body, full=False, target_storage="local")
    assert linked_elsewhere.status == 400 and linked_elsewhere.error == "target_storage_unusable"
    assert clone(api, tpl, **ok_body, version=2).error == "version_not_found"
    assert clone(api, tpl, **ok_body, vm_config={"bogus": 1}).status == 400
    elsewhere = clone(api, tpl, **ok_body, vm_config={"ide2": "local:cloudinit"})
    assert elsewhere.status == 400 and "local-lvm" in elsewhere.data["fields"]["vm_config"], elsewhere.body
    assert clone(api, tpl, **{**ok_body, "vmid": 99}).status == 400
    assert api.get("/clones", params={"page_size": 1}).ok()["total"] == before  # nothing made


def test_a_full_clone_onto_another_storage_goes_there(stack: Stack, api: Api, image: Path) -> None:
    tpl = template(stack, api, image, "local-lvm")
    done = finished(
        api,
        clone(
            api, tpl, node_id=node_ids(api, stack)[NODE1], name=unique_name("moved"), target_storage="local"
        ).ok()["clone_id"],
    )
    assert done["status"] == "completed" and done["linked"] is False, done
    conf = vm_conf(stack, NODE1, done["vmid"])
    assert conf is not None and conf["scsi0"].startswith("local:")


@pytest.mark.mariadb
def test_a_coordinator_restarted_during_a_full_clone_completes_it(
    stack: Stack, api: Api, image: Path
) -> None:
    tpl = template(stack, api, image, "local-lvm")
    name = unique_name("restart")
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 3 << 20})  # ~8 s for 24 MiB
    try:
        clone_id = clone(api, tpl, node_id=node_ids(api, stack)[NODE1], name=name, full=True).ok()["clone_id"]
        wait_for(
            lambda: api.get(f"/clones/{clone_id}").ok()["status"] == "cloning", 60, "the clone running in PVE"
        )
        assert stack.coordinator is not None
        stack.coordinator.stop()
        stack.start_coordinator()
        done = finished(api, clone_id)
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})
    assert done["status"] == "completed", done
    named = [
        vmid
        for vmid in range(100, 200)
        if (conf := vm_conf(stack, NODE1, vmid)) is not None and conf.get("name") == name
    ]
    assert named == [done["vmid"]]  # one VM: the clone picked up, not made twice


def test_a_template_with_linked_clones_is_not_cascade_deleted(stack: Stack, api: Api, image: Path) -> None:
    name = unique_name("doomed")
    tpl = upload(api, stack, image, name, storage_id(api, stack, "local-lvm", NODE1)).ok()["template_id"]
    assert wait_import(api, tpl)["upload_info"]["status"] == "imported"
    done = finished(
        api, clone(api, tpl, node_id=node_ids(api, stack)[NODE1], name=unique_name("child")).ok()["clone_id"]
    )
    assert done["linked"] is True
    refused = api.delete(f"/templates/{tpl}", params={"cascade": "true"})
    assert refused.status == 409 and refused.error == "has_linked_clones", refused.body
    assert (
        f"VM {done['vmid']}" in refused.message and refused.data["clones"][0]["clone_id"] == done["clone_id"]
    )
    assert api.get(f"/templates/{tpl}").ok()["status"] == "active"  # nothing changed
    # Once the clone's VM is gone (an administrator destroyed it), the template may go.
    pve = stack.pve_token()
    admin = open_https(pve["api_url"], pve["token_id"], pve["secret"], pve["ca_file"], 30)
    wait_for(lambda: admin.nodes(NODE1).qemu(done["vmid"]).delete() and True, 30, "the clone destroyed")
    gone = api.delete(f"/templates/{tpl}", params={"cascade": "true"})
    assert gone.status in (200, 202), gone.body

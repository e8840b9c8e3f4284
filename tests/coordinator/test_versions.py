"""Template versions through the API (contract 6.1), on a real stack: a new version uploaded
and rolled out to every node that holds the template, each copy compared with the image
(qemu-img compare) as PVE stores it; activate; delete and each of its refusals, finished on
its own when a node's agent was down; keep_versions removing the oldest version once no
linked clone uses it.

On the session's shared stack (keep_versions 3, the pruner looking every second: tests/conftest.py).
The "rolled" template (local storage, on every node, two versions) is made once per stack
and shared by the first two tests; the keep_versions test makes its own (four versions on
pve-node1 only).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.support import images
from tests.support.api import Api, Reply
from tests.support.pve import fail_calls, hold_call, wait_held
from tests.support.source_vms import destroy_vm
from tests.support.syncs import sha256, tasks_of, wait_tasks
from tests.support.uploads import (
    detail,
    local_image_dir,
    node_ids,
    storage_id,
    upload,
    vm_conf,
    wait_for,
    wait_import,
)

NODE1, NODE2, NODE3 = "pve-node1", "pve-node2", "pve-node3"
TIMEOUT = 120.0
# (stack id, template) -> (template id, what its making answered)
_MADE: dict[tuple[int, str], tuple[int, dict[str, Any]]] = {}
_IMAGES: dict[int, Path] = {}


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("version-images")


def image(base: Path, version: int) -> Path:
    """Version ``version``'s image: 16 MiB raw, 4 MiB of data of its own."""
    if version not in _IMAGES:
        _IMAGES[version] = images.raw_with_data(base / f"v{version}.raw", 16, 4, seed=100 + version)
    return _IMAGES[version]


def new_version(api: Api, template_id: int, path: Path, timeout: float = TIMEOUT, **fields: Any) -> Reply:
    """POST /templates/{id}/versions as curl -F sends it (fields first, the file last)."""
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
    with open(path, "rb") as f:
        files = {"file": (path.name, f, "application/octet-stream")}
        return api.post(f"/templates/{template_id}/versions", data=data, files=files, timeout=timeout)


def versions(api: Api, template_id: int) -> dict[str, Any]:
    return api.get(f"/templates/{template_id}/versions").ok()  # type: ignore[no-any-return]


def instances(api: Api, template_id: int, version: int) -> list[dict[str, Any]]:
    return api.get(f"/templates/{template_id}/instances?version={version}").ok()["instances"]  # type: ignore[no-any-return]


def template_disk(stack: Stack, node: str, vmid: int) -> Path:
    [disk] = sorted(local_image_dir(stack, node, "local", vmid).iterdir())
    return disk


def same(stack: Stack, node: str, vmid: int, source: Path) -> bool:
    disk = template_disk(stack, node, vmid)
    return images.compare(source, "raw", disk, disk.suffix.lstrip(".")).returncode == 0


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**9}"


def rolled(stack: Stack, api: Api, base: Path) -> tuple[int, dict[str, Any]]:
    """A local template on every node (version 1, synced), then version 2 uploaded (wait=true):
    its id and the version's answer."""
    key = (id(stack), "rolled")
    if key not in _MADE:
        local = storage_id(api, stack, "local", NODE1)
        first = upload(api, stack, image(base, 1), unique("rolled"), local, vm_config='{"memory": 1024}')
        template_id = first.ok()["template_id"]
        assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
        nodes = node_ids(api, stack)
        api.post(
            f"/templates/{template_id}/sync", json={"target_node_ids": [nodes[NODE2], nodes[NODE3]]}
        ).ok()
        assert {t["status"] for t in wait_tasks(api, template_id)} == {"completed"}
        answer = new_version(api, template_id, image(base, 2), wait=True, description="point release").ok()
        _MADE[key] = (template_id, answer)
    return _MADE[key]


@pytest.mark.mariadb
def test_a_new_version_is_rolled_out_to_every_node_that_holds_the_template(
    stack: Stack, api: Api, image_dir: Path
) -> None:
    template_id, answer = rolled(stack, api, image_dir)
    v1, v2 = image(image_dir, 1), image(image_dir, 2)
    assert answer["template_id"] == template_id and answer["version"] == 2
    assert answer["status"] == "imported" and answer["import_node"]["node_name"] == NODE1
    assert sorted(t["target_node_name"] for t in answer["sync_tasks"]) == [NODE2, NODE3]
    # Imported on its import node: the version is current at once (the rollout goes on).
    d = detail(api, template_id)
    assert d["current_version"] == 2 and d["upload_info"]["version"] == 2
    assert d["upload_info"]["upload_id"] == answer["upload_id"]
    tasks = wait_tasks(api, template_id, timeout=TIMEOUT)
    rollout = [t for t in tasks if t["version"] == 2]
    assert sorted(t["target_node"]["node_name"] for t in rollout) == [NODE2, NODE3]
    for task in rollout:
        assert task["status"] == "completed", task
        assert task["bytes_total"] == v2.stat().st_size
        # (What crossed the network may be compressed: less than what was not reused.)
        assert task["bytes_done"] == task["bytes_total"], task
        assert 0 < task["bytes_sent"] and 0 <= task["bytes_reused"] < task["bytes_total"], task
    # Every node holds both versions, each its own template VM, each copy the image itself.
    old = {i["node_name"]: i for i in instances(api, template_id, 1)}
    new = {i["node_name"]: i for i in instances(api, template_id, 2)}
    assert sorted(new) == sorted(old) == [NODE1, NODE2, NODE3]
    for node in (NODE1, NODE2, NODE3):
        assert new[node]["version"] == 2 and new[node]["status"] == "available"
        assert new[node]["vmid"] != old[node]["vmid"]
        assert same(stack, node, new[node]["vmid"], v2), f"{node}: version 2 is not the new image"
        assert same(stack, node, old[node]["vmid"], v1), f"{node}: version 1 changed"
        conf = vm_conf(stack, node, new[node]["vmid"])
        assert conf is not None and conf.get("template") == "1"
        assert conf["memory"] == "1024"  # version 1's VM options carried over
    for node in (NODE2, NODE3):
        # Version 1's disk was indexed from its copy's signed manifest when it was imported:
        # the rollout's session read none of it (agent/transfer/imported_seeds.py).
        log = stack.agents[node].log_path.read_text(errors="replace")
        disk = rf"seed \S*/{old[node]['vmid']}/\S*"
        assert re.search(disk + r": index of \d+ distinct chunks with data recorded from its manifest", log)
        seed_lines = "\n".join(line for line in log.splitlines() if "seed" in line)
        assert re.search(disk + r": index (and layout )?kept on disk", log), f"{node}: read:\n{seed_lines}"
    listed = versions(api, template_id)
    assert listed["current_version"] == 2
    assert [(v["version"], v["is_current"], v["instances"], v["clones"]) for v in listed["list"]] == [
        (2, True, 3, 0),
        (1, False, 3, 0),
    ]
    assert listed["list"][0]["sha256"] == sha256(v2) and listed["list"][0]["description"] == "point release"
    # Look-ups default to the current version and take any other.
    query = {"cluster_id": stack.cluster_id, "name": d["template_name"], "node": NODE2}
    assert api.get("/templates/resolve", params=query).ok()["vmid"] == new[NODE2]["vmid"]
    one = api.get("/templates/resolve", params={**query, "version": 1}).ok()
    assert (one["version"], one["vmid"]) == (1, old[NODE2]["vmid"])
    assert api.get("/templates/resolve", params={**query, "version": 9}).error == "version_not_found"


@pytest.mark.mariadb
def test_activate_rolls_back_and_delete_removes_a_version_everywhere(
    stack: Stack, api: Api, image_dir: Path
) -> None:
    template_id, _ = rolled(stack, api, image_dir)
    wait_tasks(api, template_id, timeout=TIMEOUT)
    nodes = node_ids(api, stack)
    path = f"/templates/{template_id}/versions"
    assert api.post(f"{path}/9/activate").error == "version_not_found"
    back = api.post(f"{path}/1/activate").ok()
    assert (back["current_version"], back["previous_version"]) == (1, 2)
    assert detail(api, template_id)["current_version"] == 1
    # A clone without a version is of the current one: linked to version 1's base disk.
    started = api.post(
        f"/templates/{template_id}/clone", json={"node_id": nodes[NODE1], "name": unique("old")}
    )
    clone = started.ok()
    assert clone["version"] == 1
    done = wait_for(
        lambda: (
            (c := api.get(f"/clones/{clone['clone_id']}").ok())["status"] in ("completed", "failed") and c
        ),
        TIMEOUT,
        "the clone",
    )
    assert done["status"] == "completed" and done["linked"] is True, done

    refused = api.delete(f"{path}/1")
    assert (refused.status, refused.error) == (409, "version_current"), refused.body
    api.post(f"{path}/2/activate").ok()
    refused = api.delete(f"{path}/1")
    assert (refused.status, refused.error) == (409, "has_linked_clones"), refused.body
    assert refused.data["clones"] == [
        {"clone_id": done["clone_id"], "vmid": done["vmid"], "name": done["name"], "node_name": NODE1}
    ]
    assert f"clone {done['clone_id']}" in refused.message
    assert [(v["version"], v["clones"]) for v in versions(api, template_id)["list"]] == [(2, 0), (1, 1)]

    old = {i["node_name"]: i["vmid"] for i in instances(api, template_id, 1)}
    destroy_vm(stack, NODE1, done["vmid"])  # the clone no longer uses version 1
    # pve-node3's agent is down: what can go goes now, the rest once it is back.
    stack.agents[NODE3].stop()
    try:
        waiting = api.delete(f"{path}/1")
        assert waiting.status == 202 and waiting.data["deleted"] is False, waiting.body
        remaining = waiting.data["remaining"]
        assert {"node_name": NODE3, "what": "vm", "vmid": old[NODE3]} in remaining
        assert {r["node_name"] for r in remaining} == {NODE3}  # (its copy of the image too)
        assert f"waiting for the agent of {NODE3}" in waiting.data["reason"]
        removed = sorted((r["node_name"], r["vmid"]) for r in waiting.data["removed_vms"])
        assert removed == sorted((n, v) for n, v in old.items() if n != NODE3)
        assert [(v["version"], v["status"]) for v in versions(api, template_id)["list"]] == [
            (2, "imported"),
            (1, "deleting"),
        ]
        again = api.post(
            f"/templates/{template_id}/clone",
            json={"node_id": nodes[NODE3], "name": unique("x"), "version": 1},
        )
        assert (again.status, again.error) == (409, "no_image"), again.body  # nothing new starts on it
    finally:
        stack.start_agent(NODE3)
    wait_for(
        lambda: [v["version"] for v in versions(api, template_id)["list"]] == [2], 60, "version 1 deleted"
    )
    for node, vmid in old.items():
        assert vm_conf(stack, node, vmid) is None, f"version 1's VM {vmid} is still on {node}"
    for inst in instances(api, template_id, 2):
        assert vm_conf(stack, inst["node_name"], inst["vmid"]) is not None
    assert api.get(f"/templates/{template_id}/instances?version=1").error == "version_not_found"  # gone
    assert api.delete(f"{path}/1").error == "version_not_found"
    assert api.post(f"{path}/1/activate").error == "version_not_found"
    assert api.delete(f"{path}/2").error == "version_current"

    # A version whose import fails: its rollout's copies fail with the reason, it never becomes
    # current.
    fail_calls(stack, "POST", f"/nodes/{NODE1}/qemu$", 400, message="no such bridge")
    failed = new_version(api, template_id, image(image_dir, 3), wait=True)
    assert (failed.status, failed.error) == (502, "import_failed"), failed.body
    tasks = [t for t in tasks_of(api, template_id) if t["version"] == 3]
    assert sorted(t["target_node"]["node_name"] for t in tasks) == [NODE2, NODE3]
    for task in tasks:
        assert task["status"] == "failed" and "no such bridge" in task["error_message"], task
    assert detail(api, template_id)["current_version"] == 2


@pytest.mark.mariadb
def test_keep_versions_removes_the_oldest_once_no_linked_clone_uses_it(
    stack: Stack, api: Api, image_dir: Path
) -> None:
    nodes = node_ids(api, stack)
    made = upload(api, stack, image(image_dir, 1), unique("kept"), storage_id(api, stack, "local", NODE1))
    template_id = made.ok()["template_id"]
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    [v1] = instances(api, template_id, 1)
    started = api.post(f"/templates/{template_id}/clone", json={"node_id": nodes[NODE1], "name": unique("k")})
    clone_id = started.ok()["clone_id"]
    clone = wait_for(
        lambda: (c := api.get(f"/clones/{clone_id}").ok())["status"] in ("completed", "failed") and c,
        TIMEOUT,
        "the clone",
    )
    assert clone["status"] == "completed" and clone["linked"] is True, clone
    second = new_version(api, template_id, image(image_dir, 2), wait=True).ok()
    assert second["version"] == 2 and second["sync_tasks"] == []  # no other node holds it
    assert new_version(api, template_id, image(image_dir, 3), wait=True).ok()["version"] == 3

    # Version 4 while its import runs: not deleted, not current yet.
    held = hold_call(stack, "POST", f"/nodes/{NODE1}/qemu$", 4)
    fourth = new_version(api, template_id, image(image_dir, 4)).ok()
    assert fourth["version"] == 4 and fourth["status"] == "uploaded"
    wait_held(stack, held)
    busy = api.delete(f"/templates/{template_id}/versions/4")
    assert (busy.status, busy.error) == (409, "upload_running"), busy.body
    wait_for(lambda: detail(api, template_id)["current_version"] == 4, TIMEOUT, "version 4 current")

    # Four versions, three kept: version 1 stays while the linked clone uses it.
    time.sleep(3)  # three rounds of the pruner
    assert [v["version"] for v in versions(api, template_id)["list"]] == [4, 3, 2, 1]
    assert vm_conf(stack, NODE1, v1["vmid"]) is not None
    destroy_vm(stack, NODE1, clone["vmid"])
    wait_for(
        lambda: [v["version"] for v in versions(api, template_id)["list"]] == [4, 3, 2],
        30,
        "keep_versions to remove version 1",
    )
    assert vm_conf(stack, NODE1, v1["vmid"]) is None
    assert api.get(f"/templates/{template_id}/instances?version=1").error == "version_not_found"  # gone
    assert {i["version"] for i in api.get(f"/templates/{template_id}/instances").ok()["instances"]} == {
        2,
        3,
        4,
    }
    assert tasks_of(api, template_id) == []


def test_a_version_on_shared_storage_is_one_import_for_every_node_and_a_rejected_one_is_none(
    stack: Stack, api: Api, image_dir: Path
) -> None:
    made = upload(api, stack, image(image_dir, 1), unique("shared"), storage_id(api, stack, "ceph-storage"))
    template_id = made.ok()["template_id"]
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    # Bad requests: nothing is made.
    assert new_version(api, 999999, image(image_dir, 2)).error == "template_not_found"
    bad = new_version(api, template_id, image(image_dir, 2), rollout="maybe")
    assert bad.status == 400 and "rollout" in bad.data["fields"], bad.body
    bad = new_version(api, template_id, image(image_dir, 2), template_name="other")
    assert bad.status == 400 and "template_name" in bad.message, bad.body
    # A rejected image is no version: the template stays as it was, and the number is free.
    whole = images.qcow2(image_dir / "whole.qcow2", size_mib=16, data_mib=4)
    rejected = new_version(api, template_id, images.truncated(image_dir / "truncated.qcow2", whole))
    assert (rejected.status, rejected.error) == (422, "image_rejected"), rejected.body
    assert [v["version"] for v in versions(api, template_id)["list"]] == [1]
    assert detail(api, template_id)["current_version"] == 1
    second = new_version(api, template_id, image(image_dir, 2), wait=True).ok()
    assert (second["version"], second["is_shared"], second["sync_tasks"]) == (2, True, [])
    new = instances(api, template_id, 2)
    assert sorted(i["node_name"] for i in new) == [NODE1, NODE2, NODE3]
    assert len({i["vmid"] for i in new}) == 1 and all(i["status"] == "available" for i in new)
    [old_vmid] = {i["vmid"] for i in instances(api, template_id, 1)}
    assert old_vmid != new[0]["vmid"]
    home = api.get(
        "/templates/resolve",
        params={
            "cluster_id": stack.cluster_id,
            "name": detail(api, template_id)["template_name"],
            "node": NODE3,
        },
    ).ok()
    assert (home["version"], home["vmid"]) == (2, new[0]["vmid"])
    gone = api.delete(f"/templates/{template_id}/versions/1").ok()
    assert gone["deleted"] is True and [r["vmid"] for r in gone["removed_vms"]] == [old_vmid]
    assert all(vm_conf(stack, node, old_vmid) is None for node in (NODE1, NODE2, NODE3))
    # A version whose import PVE refuses: failed, never current, deleted like any other.
    fail_calls(stack, "POST", f"/nodes/{second['import_node']['node_name']}/qemu$", 400, message="no way")
    failed = new_version(api, template_id, image(image_dir, 3), wait=True)
    assert (failed.status, failed.error) == (502, "import_failed") and "no way" in failed.message, failed.body
    assert detail(api, template_id)["current_version"] == 2
    refused = api.post(f"/templates/{template_id}/versions/3/activate")
    assert (refused.status, refused.error) == (409, "version_not_imported"), refused.body
    assert [(v["version"], v["status"]) for v in versions(api, template_id)["list"]] == [
        (3, "failed"),
        (2, "imported"),
    ]
    assert api.delete(f"/templates/{template_id}/versions/3").ok()["deleted"] is True
    assert [v["version"] for v in versions(api, template_id)["list"]] == [2]

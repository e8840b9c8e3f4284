"""proxmoxer, unmodified, against the emulator over HTTPS with a PVE API token: auth, the
cluster's inventory (nodes, storages with `shared`, /cluster/resources), /cluster/nextid, and
UPID tasks with their status and log."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException

from tests.pvesim.conftest import CLUSTER_NAME, NODES, Emulator, task_log, wait_task

# the default cluster's storages: type, shared flag, content types
STORAGES = {
    "local": ("dir", 0, {"images", "iso", "vztmpl", "backup", "import"}),
    "local-lvm": ("lvmthin", 0, {"images", "rootdir"}),
    "ceph-storage": ("rbd", 1, {"images", "rootdir"}),
    "nfs-templates": ("nfs", 1, {"images", "iso"}),
}


def content_set(value: str) -> set[str]:
    # PVE prints a storage's content types in hash order: compare them as a set
    return set(value.split(","))


def create_vm(pve: ProxmoxAPI, node: str, vmid: int, **params: Any) -> dict[str, Any]:
    upid = pve.nodes(node).qemu.post(vmid=vmid, **params)
    return wait_task(pve, upid)


# ---------------------------------------------------------------------------------------------
# TLS and authentication


def test_version(pve: ProxmoxAPI) -> None:
    version = pve.version.get()
    assert set(version) == {"version", "release", "repoid"}
    assert version["version"].startswith("9.")
    assert version["version"].startswith(version["release"] + ".")


def test_server_certificate_is_signed_by_the_cluster_ca(emulator: Emulator) -> None:
    ctx = ssl.create_default_context(cafile=emulator.ca_file)
    with (
        socket.create_connection((emulator.host, emulator.port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=emulator.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    # /nodes publishes the fingerprint clients pin (PVE's ssl_fingerprint)
    want = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    nodes = emulator.https().nodes.get()
    assert {n["ssl_fingerprint"] for n in nodes} == {want}


def test_untrusted_ca_is_refused(emulator: Emulator) -> None:
    # the system trust store does not know the cluster CA
    with pytest.raises(requests.exceptions.SSLError):
        emulator.https(verify_ssl=True).version.get()


def test_wrong_token_secret_gets_401(emulator: Emulator) -> None:
    with pytest.raises(ResourceException) as exc:
        emulator.https(secret="00000000-0000-0000-0000-000000000000").version.get()
    assert exc.value.status_code == 401
    assert exc.value.content == "Authentication failed!"


def test_unknown_token_gets_401(emulator: Emulator) -> None:
    with pytest.raises(ResourceException) as exc:
        emulator.https(token_id="root@pam!nosuchtoken").cluster.resources.get()
    assert exc.value.status_code == 401


def test_no_credentials_gets_401(emulator: Emulator) -> None:
    resp = emulator.raw("GET", "/cluster/resources", auth="")
    assert resp.status_code == 401
    assert resp.reason == "No ticket"


def test_new_token_works_at_once(emulator: Emulator) -> None:
    # `pvesim token add` on the running cluster, as `pveum user token add` on PVE
    secret = emulator.add_token("root@pam", "automation", privsep=False)
    api = emulator.https(token_id="root@pam!automation", secret=secret)
    assert {n["node"] for n in api.nodes.get()} == set(NODES)


def test_privilege_separated_token_without_acl(emulator: Emulator, pve: ProxmoxAPI) -> None:
    """A privsep token holds no privilege until an ACL grants one (the emulator has none)."""
    create_vm(pve, NODES[0], 950, name="audited")
    secret = emulator.add_token("root@pam", "readonly", privsep=True)
    api = emulator.https(token_id="root@pam!readonly", secret=secret)
    assert api.version.get()["version"].startswith("9.")  # every user may ask
    resources = api.cluster.resources.get()
    # no VM.Audit and Datastore.Audit: no VMs and no storages; nodes without their figures
    assert {r["type"] for r in resources} <= {"node"}
    assert {r["node"] for r in resources} == set(NODES)
    assert all("maxmem" not in r and r["status"] == "online" for r in resources)
    assert api.nodes(NODES[0]).storage.get() == []
    with pytest.raises(ResourceException) as exc:
        api.nodes(NODES[0]).qemu.post(vmid=951)
    assert exc.value.status_code == 403
    assert exc.value.content == "Permission check failed"
    assert "951" not in {str(r.get("vmid")) for r in pve.cluster.resources.get(type="vm")}


# ---------------------------------------------------------------------------------------------
# cluster, nodes, storages


def test_cluster_status(pve: ProxmoxAPI) -> None:
    status = pve.cluster.status.get()
    cluster = [e for e in status if e["type"] == "cluster"]
    assert len(cluster) == 1
    assert cluster[0]["name"] == CLUSTER_NAME
    assert cluster[0]["nodes"] == len(NODES)
    assert cluster[0]["quorate"] == 1
    nodes = {e["name"]: e for e in status if e["type"] == "node"}
    assert set(nodes) == set(NODES)
    assert sorted(e["nodeid"] for e in nodes.values()) == [1, 2, 3]
    assert all(e["online"] == 1 for e in nodes.values())
    assert sum(e["local"] for e in nodes.values()) == 1


def test_nodes(pve: ProxmoxAPI) -> None:
    nodes = pve.nodes.get()
    assert sorted(n["node"] for n in nodes) == sorted(NODES)
    for n in nodes:
        assert n["status"] == "online"
        assert n["type"] == "node" and n["id"] == f"node/{n['node']}"
        assert n["maxcpu"] >= 1 and n["maxmem"] > 0 and n["maxdisk"] > 0
    status = pve.nodes(NODES[1]).status.get()
    assert status["pveversion"].startswith("pve-manager/9.")
    assert status["memory"]["total"] > 0


def test_storage_configuration(pve: ProxmoxAPI) -> None:
    storages = {s["storage"]: s for s in pve.storage.get()}
    assert set(storages) == set(STORAGES)
    for sid, (typ, shared, content) in STORAGES.items():
        assert storages[sid]["type"] == typ
        assert storages[sid].get("shared", 0) == shared
        assert content_set(storages[sid]["content"]) == content
    assert len({s["digest"] for s in storages.values()}) == 1
    assert [s["storage"] for s in pve.storage.get(type="nfs")] == ["nfs-templates"]
    local = pve.storage("local").get()
    assert local["type"] == "dir" and Path(local["path"]).is_dir()


@pytest.mark.parametrize("node", NODES)
def test_node_storages_with_shared_flag(pve: ProxmoxAPI, node: str) -> None:
    storages = {s["storage"]: s for s in pve.nodes(node).storage.get()}
    assert set(storages) == set(STORAGES)
    for sid, (typ, shared, content) in STORAGES.items():
        s = storages[sid]
        assert (s["type"], s["shared"], content_set(s["content"])) == (typ, shared, content)
        assert s["active"] == 1 and s["enabled"] == 1
        assert s["total"] > 0 and 0 <= s["used"] <= s["total"] and 0 <= s["avail"] <= s["total"]


def test_node_storage_filters(pve: ProxmoxAPI) -> None:
    node = pve.nodes(NODES[0])
    assert {s["storage"] for s in node.storage.get(content="iso")} == {"local", "nfs-templates"}
    assert {s["storage"] for s in node.storage.get(content="import")} == {"local"}
    # a migration/clone target: only storages both nodes share
    assert {s["storage"] for s in node.storage.get(target=NODES[1])} == {"ceph-storage", "nfs-templates"}
    [lvm] = node.storage.get(storage="local-lvm", format=1)
    assert lvm["formats"] == {"supported": ["raw"], "default": "raw"}
    status = node.storage("local").status.get()
    assert status["type"] == "dir" and status["shared"] == 0 and status["active"] == 1


def test_shared_storage_shows_the_same_volumes_on_every_node(pve: ProxmoxAPI) -> None:
    create_vm(pve, NODES[0], 960, scsi0="nfs-templates:0.001", name="on-nfs")
    create_vm(pve, NODES[0], 961, scsi0="local:0.001", name="on-local")
    for node in NODES:
        nfs = {v["volid"] for v in pve.nodes(node).storage("nfs-templates").content.get()}
        assert "nfs-templates:960/vm-960-disk-0.raw" in nfs
        local = {v["volid"] for v in pve.nodes(node).storage("local").content.get(content="images")}
        assert ("local:961/vm-961-disk-0.raw" in local) == (node == NODES[0])


def test_cluster_resources(pve: ProxmoxAPI) -> None:
    create_vm(pve, NODES[1], 970, name="res-vm", cores=2, memory="1024")
    everything = pve.cluster.resources.get()
    assert {"qemu", "node", "storage"} <= {r["type"] for r in everything}

    nodes = pve.cluster.resources.get(type="node")
    assert sorted(r["node"] for r in nodes) == sorted(NODES)
    assert all(r["status"] == "online" and r["id"] == f"node/{r['node']}" for r in nodes)

    storages = pve.cluster.resources.get(type="storage")
    # one entry per storage and node
    assert {(r["storage"], r["node"]) for r in storages} == {(s, n) for s in STORAGES for n in NODES}
    for r in storages:
        typ, shared, content = STORAGES[r["storage"]]
        assert r["id"] == f"storage/{r['node']}/{r['storage']}"
        assert (r["plugintype"], r["shared"], content_set(r["content"])) == (typ, shared, content)
        assert r["status"] == "available" and r["maxdisk"] > 0

    [vm] = [r for r in pve.cluster.resources.get(type="vm") if r["vmid"] == 970]
    assert vm["id"] == "qemu/970" and vm["type"] == "qemu" and vm["node"] == NODES[1]
    assert (vm["name"], vm["status"], vm["template"]) == ("res-vm", "stopped", 0)
    assert vm["maxcpu"] == 2 and vm["maxmem"] == 1024 << 20
    assert all(r["type"] == "qemu" for r in pve.cluster.resources.get(type="vm"))


def test_offline_node(emulator: Emulator, pve: ProxmoxAPI) -> None:
    node = NODES[2]
    emulator.control("POST", f"/nodes/{node}/offline")
    try:
        by_name = {n["node"]: n for n in pve.nodes.get()}
        assert by_name[node]["status"] == "offline"
        assert by_name[NODES[0]]["status"] == "online"
        [member] = [e for e in pve.cluster.status.get() if e.get("name") == node]
        assert member["online"] == 0
        # calls proxied to the node fail as PVE's proxy does when it cannot connect
        with pytest.raises(ResourceException) as exc:
            pve.nodes(node).status.get()
        assert exc.value.status_code == 595
        [res] = [r for r in pve.cluster.resources.get(type="node") if r["node"] == node]
        assert res["status"] == "offline"
    finally:
        emulator.control("POST", f"/nodes/{node}/online")
    assert pve.nodes(node).status.get()["uptime"] >= 0


# ---------------------------------------------------------------------------------------------
# VMIDs


def test_nextid_reserves_nothing(pve: ProxmoxAPI) -> None:
    first = pve.cluster.nextid.get()
    assert isinstance(first, str) and int(first) >= 100  # PVE sends the number as a string
    assert pve.cluster.nextid.get() == first
    create_vm(pve, NODES[0], int(first))
    assert int(pve.cluster.nextid.get()) > int(first)


def test_nextid_checks_a_given_vmid(pve: ProxmoxAPI) -> None:
    create_vm(pve, NODES[0], 980)
    assert pve.cluster.nextid.get(vmid=981) == "981"
    with pytest.raises(ResourceException) as exc:
        pve.cluster.nextid.get(vmid=980)
    assert exc.value.status_code == 400
    assert exc.value.errors == {"vmid": "VM 980 already exists"}


def test_vmid_is_unique_across_the_cluster(pve: ProxmoxAPI) -> None:
    create_vm(pve, NODES[0], 985)
    with pytest.raises(ResourceException) as exc:
        pve.nodes(NODES[1]).qemu.post(vmid=985)
    assert exc.value.status_code == 500
    assert exc.value.content == f"unable to create VM 985 - VM 985 already exists on node '{NODES[0]}'"
    assert [r["node"] for r in pve.cluster.resources.get(type="vm") if r["vmid"] == 985] == [NODES[0]]


# ---------------------------------------------------------------------------------------------
# tasks


def test_create_task_status_and_log(pve: ProxmoxAPI) -> None:
    node = NODES[0]
    upid = pve.nodes(node).qemu.post(vmid=990, name="task-vm", scsi0="local-lvm:0.01")
    assert upid.startswith(f"UPID:{node}:") and ":qmcreate:990:root@pam!pvesphere:" in upid
    status = wait_task(pve, upid)
    assert status["exitstatus"] == "OK"
    assert (status["upid"], status["node"], status["type"], status["id"]) == (upid, node, "qmcreate", "990")
    # a token's task: PVE splits user and token name
    assert (status["user"], status["tokenid"]) == ("root@pam", "pvesphere")
    log = task_log(pve, upid)
    # 0.01 GiB is 10485.76 KiB, rounded up as PVE's convert_size does
    assert "scsi0: successfully created disk 'local-lvm:vm-990-disk-0,size=10486K'" in log
    assert log[-1] == "TASK OK"
    listed = {t["upid"]: t for t in pve.nodes(node).tasks.get(vmid=990)}
    assert listed[upid]["status"] == "OK"
    assert upid in {t["upid"] for t in pve.cluster.tasks.get()}
    config = pve.nodes(node).qemu(990).config.get()
    assert config["scsi0"] == "local-lvm:vm-990-disk-0,size=10486K"
    assert config["name"] == "task-vm"


def test_failed_task_reports_its_error(pve: ProxmoxAPI) -> None:
    node = NODES[0]
    upid = pve.nodes(node).qemu.post(vmid=991, scsi0="local:0,import-from=local:import/missing.qcow2")
    status = wait_task(pve, upid)
    assert status["exitstatus"].startswith("unable to create VM 991 - ")
    assert "missing.qcow2" in status["exitstatus"]
    assert task_log(pve, upid)[-1] == f"TASK ERROR: {status['exitstatus']}"
    errors = {t["upid"] for t in pve.nodes(node).tasks.get(errors=1)}
    assert upid in errors
    # nothing is left behind: the VMID is free again
    assert pve.cluster.nextid.get(vmid=991) == "991"


def test_import_from_an_import_storage_with_a_token(pve: ProxmoxAPI, qcow2_image: Path) -> None:
    """Off-host agents place the image in an `import` storage and pass its volume ID."""
    node = NODES[0]
    import_dir = Path(pve.storage("local").get()["path"]) / "import"
    shutil.copyfile(qcow2_image, import_dir / "tokenimport.qcow2")
    volumes = pve.nodes(node).storage("local").content.get(content="import")
    assert "local:import/tokenimport.qcow2" in {v["volid"] for v in volumes}
    upid = pve.nodes(node).qemu.post(vmid=992, scsi0="local:0,import-from=local:import/tokenimport.qcow2")
    assert wait_task(pve, upid)["exitstatus"] == "OK"
    log = task_log(pve, upid)
    assert any(line.startswith("transferred ") and line.endswith("(100.00%)") for line in log)
    # the source format is the hint for the target's (PVE's resolve_dst_disk_format)
    assert pve.nodes(node).qemu(992).config.get()["scsi0"] == "local:992/vm-992-disk-0.qcow2,size=32M"


def test_task_log_paging(pve: ProxmoxAPI) -> None:
    upid = pve.nodes(NODES[0]).qemu.post(vmid=994, scsi0="local:0.001", scsi1="local:0.001")
    wait_task(pve, upid)
    full = pve.nodes(NODES[0]).tasks(upid).log.get(limit=0)
    assert [e["n"] for e in full] == list(range(1, len(full) + 1))
    page = pve.nodes(NODES[0]).tasks(upid).log.get(start=1, limit=2)
    assert page == full[1:3]


def test_task_of_another_node_is_not_found(pve: ProxmoxAPI) -> None:
    upid = pve.nodes(NODES[1]).qemu.post(vmid=995)
    wait_task(pve, upid)
    # each node keeps its own task logs
    with pytest.raises(ResourceException) as exc:
        pve.nodes(NODES[0]).tasks(upid).status.get()
    assert exc.value.status_code == 400
    assert exc.value.errors == {"upid": "no such task"}

"""Registering PVE clusters: inventory read through proxmoxer, errors that save nothing."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.stack import Proc, Stack, free_port, wait_for_emulator
from tests.conftest import own_stack
from tests.support.api import Api

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.mark.mariadb
def test_demo_cluster_inventory(stack: Stack, api: Api) -> None:
    cluster = api.get(f"/clusters/{stack.cluster_id}").ok()
    token = stack.pve_token()
    assert cluster["cluster_name"] == "pve-demo"
    assert cluster["api_url"] == token["api_url"]
    assert cluster["token_id"] == "root@pam!pvesphere"
    assert "token_secret" not in cluster and token["secret"] not in json.dumps(cluster)
    assert cluster["pve_version"].startswith("9.")
    assert cluster["node_count"] == 3 and cluster["storage_count"] == 12
    assert RFC3339.match(cluster["last_sync_at"]) and cluster["last_sync_error"] is None

    nodes = api.all("/nodes", cluster_id=stack.cluster_id)
    assert sorted(n["node_name"] for n in nodes) == ["pve-node1", "pve-node2", "pve-node3"]
    assert all(n["status"] == "online" and n["cluster_name"] == "pve-demo" for n in nodes)

    storages = api.all("/storages", cluster_id=stack.cluster_id)
    by_name: dict[str, list[dict]] = {}
    for s in storages:
        by_name.setdefault(s["storage_name"], []).append(s)
    assert sorted(by_name) == ["ceph-storage", "local", "local-lvm", "nfs-templates"]
    for name, rows in by_name.items():
        assert sorted(r["node_name"] for r in rows) == ["pve-node1", "pve-node2", "pve-node3"], name
    expect = {
        "local": ("dir", False),
        "local-lvm": ("lvmthin", False),
        "ceph-storage": ("rbd", True),
        "nfs-templates": ("nfs", True),
    }
    for s in storages:
        assert (s["type"], s["shared"]) == expect[s["storage_name"]]
        assert s["total"] > 0 and s["avail"] > 0 and s["total"] >= s["used"]
    local = by_name["local"][0]
    assert set(local["content"].split(",")) == {"images", "iso", "vztmpl", "backup", "import"}
    assert "images" in by_name["local-lvm"][0]["content"].split(",")


def test_storage_filters(stack: Stack, api: Api) -> None:
    nodes = {n["node_name"]: n["id"] for n in api.all("/nodes", cluster_id=stack.cluster_id)}
    on_node1 = api.all("/storages", node_id=nodes["pve-node1"])
    assert sorted(s["storage_name"] for s in on_node1) == [
        "ceph-storage",
        "local",
        "local-lvm",
        "nfs-templates",
    ]
    shared = api.all("/storages", cluster_id=stack.cluster_id, shared="true")
    assert {s["storage_name"] for s in shared} == {"ceph-storage", "nfs-templates"} and len(shared) == 6
    local = api.all("/storages", cluster_id=stack.cluster_id, shared=0)
    assert {s["storage_name"] for s in local} == {"local", "local-lvm"} and len(local) == 6
    assert api.get("/storages?shared=maybe").status == 400
    assert api.get("/storages?cluster_id=987654").ok()["list"] == []


SOME_SECRET = "4d1c5b8e-0a4f-4f5e-9d7a-2b1c3d4e5f60"


def test_unreachable_url_is_a_502_and_saves_nothing(api: Api) -> None:
    before = api.get("/clusters").ok()["total"]
    port = free_port()
    reply = api.post(
        "/clusters",
        json={"api_url": f"https://127.0.0.1:{port}", "token_id": "root@pam!x", "token_secret": SOME_SECRET},
    )
    assert reply.status == 502
    assert reply.error == "pve_unreachable"
    assert f"https://127.0.0.1:{port}" in reply.message and "does not answer" in reply.message
    assert api.get("/clusters").ok()["total"] == before


@pytest.mark.mariadb
def test_wrong_token_saves_nothing(stack: Stack, api: Api) -> None:
    before = api.get("/clusters").ok()["total"]
    token = stack.pve_token()
    reply = api.post(
        "/clusters",
        json={
            "api_url": token["api_url"],
            "token_id": token["token_id"],
            "token_secret": "00000000-0000-0000-0000-000000000000",
        },
    )
    assert reply.status == 400
    assert reply.error == "pve_auth"
    assert "rejected" in reply.message and token["token_id"] in reply.message
    assert api.get("/clusters").ok()["total"] == before


@pytest.mark.mariadb
def test_registering_the_same_cluster_twice_is_409(stack: Stack, api: Api) -> None:
    token = stack.pve_token()
    reply = api.post(
        "/clusters",
        json={"api_url": token["api_url"], "token_id": token["token_id"], "token_secret": token["secret"]},
    )
    assert reply.status == 409
    assert reply.error == "cluster_exists"
    assert f"id {stack.cluster_id}" in reply.message


@pytest.fixture(params=["sqlite"])
def lab_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A stack of its own for the second cluster: a cluster cannot be deleted, and one with no
    agents keeps /readyz at 503 for every later test of a shared stack."""
    return own_stack(request, tmp_path_factory, "lab")


@pytest.fixture
def second_emulator(lab_stack: Stack, tmp_path: Path) -> Iterator[tuple[Proc, dict]]:
    """Another PVE cluster (own CA, 2 nodes) that the coordinator has never seen."""
    port = free_port()
    state = tmp_path / "lab"
    proc = Proc(
        "pvesim-lab",
        [
            lab_stack.python,
            "-m",
            "pvesim.cli",
            "serve",
            "--state-dir",
            str(state),
            "--port",
            str(port),
            "--cluster-name",
            f"lab-{port}",
            "--nodes",
            "2",
        ],
        lab_stack._env(),
        tmp_path / "lab.log",
    )
    proc.start()
    yield proc, wait_for_emulator(state, proc)
    proc.stop()


def test_second_cluster_tls_then_register_refresh_and_outage(lab_stack: Stack, second_emulator) -> None:  # type: ignore[no-untyped-def]
    api = Api(lab_stack.api, lab_stack.admin_token)
    proc, token = second_emulator
    body = {"api_url": token["api_url"], "token_id": token["token_id"], "token_secret": token["secret"]}
    # Its certificate is signed by a CA the coordinator does not trust.
    reply = api.post("/clusters", json=body)
    assert reply.status == 400 and reply.error == "pve_tls"
    assert "verify_ssl=false" in reply.message
    cluster = api.post("/clusters", json={**body, "verify_ssl": False}).ok()
    assert cluster["cluster_name"].startswith("lab-")
    assert cluster["node_count"] == 2 and cluster["storage_count"] == 8
    assert cluster["creator"] == cluster["modifier"] != ""
    refreshed = api.post(f"/clusters/{cluster['id']}/refresh").ok()
    assert refreshed["last_sync_error"] is None
    # A wrong secret in an update is refused and changes nothing.
    reply = api.put(f"/clusters/{cluster['id']}", json={"token_secret": SOME_SECRET})
    assert reply.status == 400 and reply.error == "pve_auth"
    assert api.post(f"/clusters/{cluster['id']}/refresh").status == 200

    proc.signal(signal.SIGTERM)
    proc.stop()
    reply = api.post(f"/clusters/{cluster['id']}/refresh")
    assert reply.status == 502 and reply.error == "pve_unreachable"
    after = api.get(f"/clusters/{cluster['id']}").ok()
    assert "does not answer" in after["last_sync_error"]
    # Its inventory stays as last read.
    assert after["node_count"] == 2 and after["storage_count"] == 8


def test_bad_registration_input(api: Api) -> None:
    reply = api.post("/clusters", json={"api_url": "http://pve:8006", "token_id": "root", "token_secret": ""})
    assert reply.status == 400
    fields = reply.data["fields"]
    assert "https" in fields["api_url"]
    assert "USER@REALM!TOKENNAME" in fields["token_id"]
    assert "UUID" in fields["token_secret"]


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        # the HTTP client cannot put these in a header: they were a 500
        ("token_secret", "ünïcödé-€-secret", "UUID"),
        ("token_secret", "4d1c5b8e-0a4f-4f5e-9d7a-2b1c3d4e5f60\n", "UUID"),
        ("token_id", "root@pam!tök€n", "USER@REALM!TOKENNAME"),
        # control characters in the address: urllib3 refused them with a 500, or urlsplit dropped them
        ("api_url", "https://pve1\u0000.example:8006", "control characters"),
        ("api_url", "https://pve1.exa\tmple:8006", "control characters"),
        ("api_url", "https://pve1\u0085:8006", "control characters"),
        ("api_url", "https://pvé.example:8006", "xn--"),
        ("api_url", "https://pve1:0", "port"),
        ("api_url", "https://pve1:65536", "Port out of range"),
        ("api_url", "https://pve 1:8006", "host name"),
        ("api_url", "https://[fe80::1%25eth0]:8006", "IPv6"),
    ],
)
def test_settings_that_cannot_reach_pve_are_400_before_any_connection(
    api: Api, field: str, value: str, text: str
) -> None:
    body = {"api_url": "https://127.0.0.1:9", "token_id": "root@pam!x", "token_secret": SOME_SECRET}
    body[field] = value
    for reply in (
        api.post("/clusters", json=body),
        api.put("/clusters/1", json={field: body[field]}),
    ):
        assert reply.status == 400, reply.body
        assert reply.error == "invalid_request"
        assert text in reply.data["fields"][field], reply.data

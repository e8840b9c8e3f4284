"""Every node's agent has its own identity: enrolled once with a join token, acting only as
itself, cut off by a revocation."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from demo.stack import Stack
from shared.version import VERSION
from tests.support.api import Api, Reply
from tests.support.images import raw_with_data
from tests.support.uploads import storage_id, upload, wait_for


def agent_api(stack: Stack, credential: str | None) -> Api:
    """The coordinator's agent API over HTTPS, as agents call it, as the holder of ``credential``."""
    return Api(stack.coordinator_https_url + "/agent-api/v1", credential, stack.ca_file)


def join_token(stack: Stack, node: str, *ttl: str) -> str:
    return stack.coordinator_cli("agent", "enroll", node, *ttl).stdout.strip()


def enroll(stack: Stack, node: str, token: str) -> Reply:
    return agent_api(stack, token).post("/enroll", json={"node_name": node})


def hello(stack: Stack, node: str) -> dict[str, object]:
    return {
        "node_name": node,
        "cluster_name": "pve-demo",
        "url": stack.agent_url(node),
        "version": VERSION,  # an agent of another version may be refused (shared/version.py)
        "started_at": "2026-01-01T00:00:00Z",
        "pve_ok": True,
        "staging_free_bytes": 1,
    }


def agents_by_node(api: Api) -> dict[str, dict]:
    return {a["node_name"]: a for a in api.all("/agents") if a["cluster_name"] == "pve-demo"}


def wait_live(api: Api, node: str) -> None:
    deadline = time.monotonic() + 20
    while not agents_by_node(api)[node]["live"]:
        assert time.monotonic() < deadline, f"the agent of {node} is not live"
        time.sleep(0.3)


def agent_list(stack: Stack) -> dict[str, list[str]]:
    lines = stack.coordinator_cli("agent", "list").stdout.splitlines()[1:]
    return {line.split()[0]: line.split() for line in lines}


@pytest.mark.mariadb
def test_a_join_token_works_once_for_its_own_node_only(stack: Stack) -> None:
    node, other = f"extra-{secrets.token_hex(3)}", f"other-{secrets.token_hex(3)}"
    token = join_token(stack, node)
    assert token.startswith("pvsj_")
    assert agent_list(stack)[node][2] == "waiting"

    wrong = enroll(stack, other, token)  # node2's token used by node3
    assert (wrong.status, wrong.error) == (403, "wrong_node"), wrong.body
    assert node in wrong.message and other in wrong.message

    enrolled = enroll(stack, node, token).ok()  # the refusal above did not spend it
    assert enrolled["node_name"] == node and enrolled["generation"] == 1
    credential = enrolled["credential"]
    assert agent_api(stack, credential).get("/whoami").ok() == {"node_name": node, "generation": 1}
    assert agent_list(stack)[node][1:3] == ["1", "enrolled"]

    again = enroll(stack, node, token)
    assert (again.status, again.error) == (401, "invalid_join_token"), again.body
    assert agent_api(stack, "pvsj_made-up").post("/enroll", json={"node_name": node}).status == 401

    # A new join token for the node, once used, supersedes the credential of the old one.
    second = enroll(stack, node, join_token(stack, node)).ok()
    assert second["generation"] == 2
    stale = agent_api(stack, credential).get("/whoami")
    assert stale.status == 401 and "superseded" in stale.message
    assert agent_api(stack, second["credential"]).get("/whoami").status == 200


def test_an_expired_join_token_is_refused(stack: Stack) -> None:
    node = f"late-{secrets.token_hex(3)}"
    token = join_token(stack, node, "--ttl", "1s")
    time.sleep(1.5)
    late = enroll(stack, node, token)
    assert (late.status, late.error) == (401, "join_token_expired"), late.body
    assert agent_list(stack)[node][2] == "expired"
    bad = stack.coordinator_cli("agent", "enroll", "not.a.node", check=False)
    assert bad.returncode == 1 and "not a PVE node name" in bad.stderr


def test_a_nodes_credential_cannot_act_as_another_node(stack: Stack, api: Api) -> None:
    node2 = agent_api(stack, stack.agent_credential("pve-node2"))
    agents = agents_by_node(api)

    as_node3 = node2.post("/register", json=hello(stack, "pve-node3"))
    assert (as_node3.status, as_node3.error) == (403, "wrong_node"), as_node3.body
    assert "pve-node2" in as_node3.message and "pve-node3" in as_node3.message

    node3_id = agents["pve-node3"]["id"]
    for body in (hello(stack, "pve-node2"), hello(stack, "pve-node3")):
        beat = node2.post(f"/agents/{node3_id}/heartbeat", json=body)
        assert beat.status == 403, beat.body
    bye = node2.post(f"/agents/{node3_id}/goodbye")
    assert (bye.status, bye.error) == (403, "wrong_node"), bye.body
    assert agents_by_node(api)["pve-node3"]["live"] is True
    # Its own agent row it may beat for.
    assert node2.post(f"/agents/{agents['pve-node2']['id']}/heartbeat", json=hello(stack, "pve-node2")).ok()

    # Nor does it give node3's agent orders.
    headers = {"Authorization": f"Bearer {stack.agent_credential('pve-node2')}"}
    node3 = stack.agent_url("pve-node3")
    orders = [
        ("GET", "/v1/whoami", None),
        ("GET", "/v1/staging", None),
        ("DELETE", "/v1/uploads/1", None),
        ("POST", "/v1/imports", {}),
        ("DELETE", "/v1/vms/9999", None),
        ("POST", "/v1/transfers", {}),
        ("GET", "/v1/receives/1", None),
        ("DELETE", "/v1/receives/1", None),
    ]
    for method, path, body in orders:
        reply = requests.request(
            method, node3 + path, json=body, headers=headers, timeout=10, verify=str(stack.ca_file)
        )
        assert (reply.status_code, reply.json()["error"]) == (401, "unauthorized"), (path, reply.text)
    own = requests.get(
        node3 + "/v1/whoami", headers=_bearer(stack, "pve-node3"), timeout=10, verify=str(stack.ca_file)
    )
    assert own.status_code == 200 and own.json()["node"] == "pve-node3"


def _bearer(stack: Stack, node: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.agent_credential(node)}"}


def test_a_restarted_agent_uses_its_stored_credential(stack: Stack, api: Api) -> None:
    before = agent_list(stack)["pve-node1"]
    credential_file = stack.agent_dir("pve-node1") / "credential"
    assert credential_file.stat().st_mode & 0o777 == 0o600
    stack.agents["pve-node1"].stop()
    stack.start_agent("pve-node1")  # its join token is spent: only the stored credential can work
    wait_live(api, "pve-node1")
    assert agent_list(stack)["pve-node1"] == before  # same generation, not enrolled again
    log = (stack.base / "logs" / "agent-pve-node1.log").read_text()
    assert log.count("enrolled node pve-node1") == 1


def agent_check(stack: Stack, node: str) -> subprocess.CompletedProcess[str]:
    """`pvesphere-agent check` on the node, as its administrator runs it."""
    shim = stack.pvesim_dir / "nodes" / node / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    config = stack.agent_dir(node) / "agent.toml"
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "--config", str(config), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_says_whether_the_agent_is_enrolled_and_accepted(stack: Stack) -> None:
    result = agent_check(stack, "pve-node2")
    assert "enrolment: enrolled as node pve-node2" in result.stdout, result.stdout + result.stderr
    assert "credential accepted" in result.stdout
    cert = stack.pvesim_dir / "nodes" / "pve-node2" / "pve-ssl.pem"
    assert f"TLS: {cert} is valid for {stack.agent_url('pve-node2')} (issued by tls_ca_file" in result.stdout
    assert result.returncode == 0, result.stdout


@pytest.mark.mariadb
def test_revoking_a_node_cuts_its_agent_off_until_it_enrols_again(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    node = "pve-node3"
    credential = stack.agent_credential(node)
    agent_id = agents_by_node(api)[node]["id"]
    log = stack.base / "logs" / f"agent-{node}.log"
    log_from = log.stat().st_size
    revoked = stack.coordinator_cli("agent", "revoke", node)
    try:
        assert "revoked" in revoked.stdout
        assert agent_list(stack)[node][2] == "revoked"
        # At once: its next heartbeat is refused, it is not live, it gets no new work.
        beat = agent_api(stack, credential).post(f"/agents/{agent_id}/heartbeat", json=hello(stack, node))
        assert beat.status == 401 and "revoked" in beat.message, beat.body
        assert agents_by_node(api)[node]["live"] is False
        image = raw_with_data(tmp_path / "revoked.raw", 4, 1)
        refused = upload(
            api, stack, image, f"revoked-{secrets.token_hex(3)}", storage_id(api, stack, "local", node)
        )
        assert (refused.status, refused.error) == (503, "no_live_agent"), refused.body
        check = agent_check(stack, node)
        assert check.returncode == 1 and "credential REFUSED" in check.stdout, check.stdout
        # The agent keeps beating: refused every time, and it says why.
        refusal = b"the coordinator refuses this node's credential"
        wait_for(lambda: refusal in log.read_bytes()[log_from:], 15, "the agent saying it is refused")
        assert agents_by_node(api)[node]["live"] is False
    finally:
        # Enrolling again takes a new join token (and the old credential stays refused).
        stack.agents[node].stop()
        (stack.agent_dir(node) / "credential").unlink()
        stack.enroll_agents([node])
        stack.start_agent(node)
    wait_live(api, node)
    assert agent_list(stack)[node][2] == "enrolled"
    assert agent_api(stack, credential).get("/whoami").status == 401
    assert agent_api(stack, stack.agent_credential(node)).get("/whoami").ok()["node_name"] == node

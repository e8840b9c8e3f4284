"""Who may stream to an agent (a ticket signed for exactly that transfer), and how many at once."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from demo.stack import Stack
from shared.frames import CHUNK, chunk_digest, encode_header, frame_ranges
from shared.tickets import TICKET_LIFETIME, Ticket, TicketSigner
from tests.support.api import Api
from tests.support.manifests import manifest_of
from tests.support.syncs import LoadSampler, task_uid, wait_tasks
from tests.sync.test_faults import local_template, start_sync


class Target:
    """pve-node2's agent, spoken to as a peer would: with a ticket, no credential."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.url = stack.agent_url("pve-node2")

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Over HTTPS, checking the agent's certificate as its peers do."""
        kw.setdefault("timeout", 10)
        return requests.request(method, self.url + path, verify=str(self.stack.ca_file), **kw)

    def open(
        self, task_id: int, ticket: str, headers: dict[str, str] | None = None, data: bytes = b""
    ) -> requests.Response:
        """Open a session with the manifest of ``data`` (the image the ticket is for)."""
        manifest = base64.b64encode(manifest_of(data).encode()).decode() if data else ""
        body = {"ticket": ticket, "next_hops": [], "manifest": manifest}
        return self.call("POST", f"/v1/receives/{task_id}/session", json=body, headers=headers)

    def send(self, task_id: int, session: str, data: bytes) -> requests.Response:
        body = b"".join(
            encode_header(o, n, chunk_digest(data[o : o + n])) + data[o : o + n]
            for o, n in frame_ranges(0, len(data), CHUNK)
        )
        headers = {"X-Pvesphere-Session": session}
        return self.call("PUT", f"/v1/receives/{task_id}/data", data=body, headers=headers, timeout=30)

    def drop(self, task_id: int) -> None:
        """What the coordinator does once a task is gone (with the node's own credential)."""
        headers = {"Authorization": f"Bearer {self.stack.agent_credential('pve-node2')}"}
        self.call("DELETE", f"/v1/receives/{task_id}", headers=headers)

    def restart(self) -> None:
        """Restart the agent; back once it has registered (and learnt the ticket key again)."""
        self.stack.agents["pve-node2"].stop()
        self.stack.start_agent("pve-node2")
        deadline = time.monotonic() + 20
        while not self.call("GET", "/health").json()["transfers"]["registered"]:
            assert time.monotonic() < deadline, "restarted agent did not register"
            time.sleep(0.2)


def claims(data: bytes, task: int, **changes: object) -> Ticket:
    now = time.time()
    fields: dict[str, object] = {
        "jti": secrets.token_hex(12),
        "task_id": task,
        "task_uid": f"{task:032x}",
        "epoch": 2,
        "node": "pve-node2",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "manifest": manifest_of(data).digest(),
        "fmt": "raw",
        "issued_at": now,
        "expires_at": now + TICKET_LIFETIME,
    }
    fields.update(changes)
    return Ticket(**fields)  # type: ignore[arg-type]


def test_forged_replayed_and_misdirected_tickets_are_refused(stack: Stack) -> None:
    coordinator_key = TicketSigner(stack.base / "ticket-signing.key")  # what the coordinator signs with
    stranger = TicketSigner(stack.base / f"stranger-{secrets.token_hex(3)}.key")
    data = os.urandom(3 << 20)
    task = 800_000 + secrets.randbelow(100_000)  # the agent trusts the ticket, not a database
    target = Target(stack)
    now = time.time()
    try:
        good = coordinator_key.sign(claims(data, task))
        opened = target.open(task, good, data=data)
        assert opened.status_code == 200 and opened.json()["offset"] == 0
        # The manifest must be the one the ticket signs, for the image the ticket names.
        other = os.urandom(len(data))
        for ticket in (
            coordinator_key.sign(claims(data, task)),  # another image's manifest than the signed one
            coordinator_key.sign(claims(data, task, manifest=manifest_of(other).digest())),
        ):
            reply = target.open(task, ticket, data=other)
            assert (reply.status_code, reply.json()["error"]) == (403, "bad_ticket"), reply.text

        refusals = [
            (good, 403, "ticket_used"),  # replay of a ticket already spent
            (stranger.sign(claims(data, task)), 403, "bad_ticket"),  # forged
            (coordinator_key.sign(claims(data, task, node="pve-node3")), 403, "bad_ticket"),
            (coordinator_key.sign(claims(data, task + 1)), 403, "bad_ticket"),
            (coordinator_key.sign(claims(data, task, epoch=1)), 409, "stale_ticket"),
            (coordinator_key.sign(claims(data, task, issued_at=0, expires_at=300)), 403, "bad_ticket"),
            # Signed by the coordinator's key, yet absurd: refused all the same.
            (coordinator_key.sign(claims(data, task, size=-1)), 403, "bad_ticket"),
            (coordinator_key.sign(claims(data, task, size=1 << 50)), 403, "bad_ticket"),
            (
                coordinator_key.sign(claims(data, task, issued_at=now + 3600, expires_at=now + 3900)),
                403,
                "bad_ticket",
            ),
            (coordinator_key.sign(claims(data, task, expires_at=now + 30 * 86400)), 403, "bad_ticket"),
            (coordinator_key.sign(claims(data, task, task_id=0)), 403, "bad_ticket"),
            ("garbage", 403, "bad_ticket"),
        ]
        for ticket, status, error in refusals:
            reply = target.open(task, ticket, data=data)
            assert (reply.status_code, reply.json()["error"]) == (status, error), reply.text
        # A made-up session cannot stream; the real one can, and the copy is verified.
        assert target.send(task, "made-up", data).json()["error"] == "session_superseded"
        done = target.send(task, opened.json()["session"], data)
        assert done.status_code == 200 and done.json()["state"] == "complete", done.text
    finally:
        target.drop(task)


def test_a_credential_opens_no_stream_without_a_ticket(stack: Stack) -> None:
    """Peers are authorised by tickets alone: no node's credential stands in for one."""
    target = Target(stack)
    for node in ("pve-node1", "pve-node2"):
        headers = {"Authorization": f"Bearer {stack.agent_credential(node)}"}
        no_ticket = target.call("POST", "/v1/receives/1/session", json={}, headers=headers)
        assert no_ticket.status_code == 400, no_ticket.text
        assert target.open(1, "", headers).json()["error"] == "bad_ticket"
        data = target.call("PUT", "/v1/receives/1/data", data=b"x" * 64, headers=headers)
        assert data.json()["error"] == "session_superseded", data.text


def test_a_used_ticket_is_still_refused_after_the_agent_restarts(stack: Stack) -> None:
    coordinator_key = TicketSigner(stack.base / "ticket-signing.key")
    data = os.urandom(1 << 20)
    task = 900_000 + secrets.randbelow(99_999)
    target = Target(stack)
    try:
        ticket = coordinator_key.sign(claims(data, task))
        assert target.open(task, ticket, data=data).status_code == 200
        target.restart()
        replay = target.open(task, ticket, data=data)
        assert (replay.status_code, replay.json()["error"]) == (403, "ticket_used"), replay.text
        assert target.open(task, coordinator_key.sign(claims(data, task)), data=data).status_code == 200
    finally:
        target.drop(task)


def test_three_templates_to_two_nodes_never_exceed_the_node_limits(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    api, stack = slow_api, slow_stack
    # 64 MiB each: node 1's two streams share its 24 MiB/s for seconds, so a slow
    # scheduler round on a busy machine cannot hide the overlap.
    templates = [local_template(api, stack, tmp_path, f"limits-{i}", 64)[0] for i in range(3)]
    with LoadSampler(stack) as load:
        for template_id in templates:  # all queued at once
            start_sync(api, stack, template_id, "pve-node2", "pve-node3")
        results = [wait_tasks(api, template_id) for template_id in templates]
    assert all(t["status"] == "completed" for tasks in results for t in tasks), results
    assert load.samples > 20
    assert max(load.max_inbound.values()) <= 2 and max(load.max_outbound.values()) <= 2, (
        load.max_inbound,
        load.max_outbound,
    )
    # The limit was reached, not merely never tested: node 1 sent two images at once.
    assert load.max_outbound["pve-node1"] == 2


@pytest.mark.mariadb
def test_a_transfer_of_an_attempt_that_is_over_gets_no_new_tickets(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    """A sender resuming a stream asks the coordinator for a new ticket, naming its attempt."""
    api, stack = slow_api, slow_stack
    template_id, _ = local_template(api, stack, tmp_path, "tickets", 48)
    (task_id,) = start_sync(api, stack, template_id, "pve-node2")
    uid = task_uid(stack, task_id)

    def ask(epoch: int, node: str = "pve-node1", uid: str = uid) -> requests.Response:
        return requests.post(
            f"{stack.coordinator_https_url}/agent-api/v1/tickets",
            json={"task_id": task_id, "task_uid": uid, "epoch": epoch},
            headers={"Authorization": f"Bearer {stack.agent_credential(node)}"},
            timeout=10,
            verify=str(stack.ca_file),
        )

    while (task := api.get(f"/templates/sync-tasks/{task_id}").ok())["status"] == "pending":
        time.sleep(0.05)
    attempt = task["attempts"]  # the first attempt's epoch: nothing has been unclaimed
    current, stale = ask(attempt), ask(attempt + 1)
    # Only the nodes that send in the transfer get tickets for it: pve-node3 has no part in it,
    # and the target does not send to itself.
    outsiders = [ask(attempt, "pve-node3"), ask(attempt, "pve-node2")]
    # A transfer of another task that had this id (deleted, the id reused) gets none either.
    other_task = ask(attempt, uid=f"{task_id:032x}")
    wait_tasks(api, template_id)
    assert current.status_code == 200 and current.json()["data"]["epoch"] == attempt, current.text
    assert (stale.status_code, stale.json()["data"]["error"]) == (409, "stale_transfer"), stale.text
    assert "newer attempt" in stale.json()["message"]
    assert (other_task.status_code, other_task.json()["data"]["error"]) == (404, "sync_task_not_found")
    for outsider in outsiders:
        assert (outsider.status_code, outsider.json()["data"]["error"]) == (403, "not_a_sender"), (
            outsider.text
        )

"""Who may stream to an agent (a ticket signed for exactly that transfer), and how many at once."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

import requests

from demo.stack import Stack
from shared.frames import chunk_digest, encode_header, frame_ranges
from shared.tickets import TicketSigner
from tests.support.api import Api
from tests.support.syncs import LoadSampler, wait_tasks
from tests.sync.test_faults import local_template, start_sync


class Target:
    """pve-node2's agent, spoken to as a peer would."""

    def __init__(self, stack: Stack, credential: bool = True) -> None:
        self.url = stack.agent_url("pve-node2")
        secret = (stack.base / "agent.token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {secret}"} if credential else {}

    def open(self, task_id: int, ticket: str) -> requests.Response:
        return requests.post(
            f"{self.url}/v1/receives/{task_id}/session",
            json={"ticket": ticket, "next_hops": []},
            headers=self.headers,
            timeout=10,
        )

    def send(self, task_id: int, session: str, data: bytes) -> requests.Response:
        body = b"".join(
            encode_header(o, n, chunk_digest(data[o : o + n])) + data[o : o + n]
            for o, n in frame_ranges(0, len(data), 1 << 20)
        )
        return requests.put(
            f"{self.url}/v1/receives/{task_id}/data",
            data=body,
            headers={**self.headers, "X-Pvesphere-Session": session},
            timeout=30,
        )

    def drop(self, task_id: int) -> None:
        requests.delete(f"{self.url}/v1/receives/{task_id}", headers=self.headers, timeout=10)


def test_forged_replayed_and_misdirected_tickets_are_refused(stack: Stack) -> None:
    coordinator_key = TicketSigner(stack.base / "ticket-signing.key")  # what the coordinator signs with
    stranger = TicketSigner(stack.base / f"stranger-{secrets.token_hex(3)}.key")
    data = os.urandom(3 << 20)
    task = 800_000 + secrets.randbelow(100_000)  # the agent trusts the ticket, not a database
    claims = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "fmt": "raw"}
    target = Target(stack)
    try:
        good = coordinator_key.issue(task_id=task, epoch=2, node="pve-node2", **claims)
        opened = target.open(task, good)
        assert opened.status_code == 200 and opened.json()["offset"] == 0

        refusals = [
            (good, 403, "ticket_used"),  # replay of a ticket already spent
            (stranger.issue(task_id=task, epoch=2, node="pve-node2", **claims), 403, "bad_ticket"),  # forged
            (coordinator_key.issue(task_id=task, epoch=2, node="pve-node3", **claims), 403, "bad_ticket"),
            (coordinator_key.issue(task_id=task + 1, epoch=2, node="pve-node2", **claims), 403, "bad_ticket"),
            (coordinator_key.issue(task_id=task, epoch=1, node="pve-node2", **claims), 409, "stale_ticket"),
            (
                coordinator_key.issue(task_id=task, epoch=2, node="pve-node2", now=0, **claims),
                403,
                "bad_ticket",
            ),  # expired long ago
            ("garbage", 403, "bad_ticket"),
        ]
        for ticket, status, error in refusals:
            reply = target.open(task, ticket)
            assert (reply.status_code, reply.json()["error"]) == (status, error), reply.text
        # Without the agent credential nothing is even looked at.
        assert Target(stack, credential=False).open(task, good).status_code == 401
        # A made-up session cannot stream; the real one can, and the copy is verified.
        assert target.send(task, "made-up", data).json()["error"] == "session_superseded"
        done = target.send(task, opened.json()["session"], data)
        assert done.status_code == 200 and done.json()["state"] == "complete", done.text
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


def test_a_transfer_of_an_attempt_that_is_over_gets_no_new_tickets(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    """A sender resuming a stream asks the coordinator for a new ticket, naming its attempt."""
    api, stack = slow_api, slow_stack
    template_id, _ = local_template(api, stack, tmp_path, "tickets", 48)
    (task_id,) = start_sync(api, stack, template_id, "pve-node2")
    secret = (stack.base / "agent.token").read_text().strip()

    def ask(epoch: int) -> requests.Response:
        return requests.post(
            f"{stack.coordinator_url}/agent-api/v1/tickets",
            json={"task_id": task_id, "epoch": epoch},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        )

    while (task := api.get(f"/templates/sync-tasks/{task_id}").ok())["status"] == "pending":
        time.sleep(0.05)
    attempt = task["attempts"]  # the first attempt's epoch: nothing has been unclaimed
    current, stale = ask(attempt), ask(attempt + 1)
    wait_tasks(api, template_id)
    assert current.status_code == 200 and current.json()["data"]["epoch"] == attempt, current.text
    assert (stale.status_code, stale.json()["data"]["error"]) == (409, "stale_transfer"), stale.text
    assert "newer attempt" in stale.json()["message"]

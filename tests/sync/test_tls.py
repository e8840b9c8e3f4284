"""Node-to-node copies over TLS: what crosses the wire is not the image, and an agent whose
certificate the cluster CA did not issue gets no image (and the sync says why, at once)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import requests

from demo.stack import Stack
from pvesim.tls import ensure_certificates
from tests.support.api import Api
from tests.support.proxies import WireTap
from tests.support.syncs import guest_sha256, received_copy, sha256, wait_tasks
from tests.support.uploads import wait_for
from tests.sync.test_faults import behind, local_template, restart_agent, restart_coordinator, start_sync

# TLS record content types (RFC 8446, 5.1).
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 0x14, 0x15, 0x16, 0x17


def _record_types(wire: bytes) -> list[int]:
    """The content types of the TLS records ``wire`` is made of (and nothing else is allowed;
    the last record may still be on its way)."""
    types, at = [], 0
    while at + 5 <= len(wire):
        assert wire[at] in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA), at
        assert wire[at + 1] == 3, f"not a TLS record at byte {at}"
        types.append(wire[at])
        at += 5 + int.from_bytes(wire[at + 3 : at + 5], "big")
    return types


def test_the_bytes_between_two_agents_are_tls_records_not_the_image(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    tap = WireTap(stack.agent_port("pve-node2"))  # the sender dials the tap, the tap pve-node2
    with behind(stack, "pve-node2", tap):
        template_id, image = local_template(api, stack, tmp_path, "wire", 24)
        (task_id,) = start_sync(api, stack, template_id, "pve-node2")
        (task,) = wait_tasks(api, template_id)
    assert task["status"] == "completed", task
    assert sha256(received_copy(stack, "pve-node2", task_id)) == guest_sha256(image)

    connections = tap.captured()
    assert max(len(sent) for sent in connections) > image.stat().st_size  # the image crossed the tap
    for sent in connections:
        types = _record_types(sent)
        assert types[0] == HANDSHAKE and set(types[1:]) <= {CHANGE_CIPHER_SPEC, APPLICATION_DATA, ALERT}
    # None of the image's bytes crossed as they are, nor a request head or a credential.
    data = image.read_bytes()
    rng = random.Random(7)
    samples = [data[o : o + 32] for o in (rng.randrange(len(data) - 32) for _ in range(2000))]
    samples = [s for s in samples if s.count(0) < 8]  # its data, not the holes of the sparse file
    assert len(samples) > 100
    for sent in connections:
        assert not _found_in(samples, sent)
        assert b"/v1/receives/" not in sent and b"Bearer" not in sent


BLOCK = 16


def _found_in(samples: list[bytes], wire: bytes) -> list[bytes]:
    """The samples (each at least 2 * BLOCK - 1 bytes) that occur in ``wire``: what
    ``[s for s in samples if s in wire]`` answers, without 2000 scans of the whole wire
    (9 s for 25 MiB here, a minute on a busy machine).

    Exact: a sample found at offset p covers the wire's BLOCK-aligned block at p + k with
    k = -p mod BLOCK < BLOCK, so one of its BLOCK slices equals an aligned block of the wire;
    a sample none of whose slices does cannot be there, the others are searched for.
    """
    blocks = {wire[at : at + BLOCK] for at in range(0, len(wire) - BLOCK + 1, BLOCK)}
    assert all(len(s) >= 2 * BLOCK - 1 for s in samples)
    return [s for s in samples if any(s[k : k + BLOCK] in blocks for k in range(BLOCK)) and s in wire]


def test_an_agent_with_a_certificate_from_another_ca_gets_no_image(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    """pve-node3's agent presents a certificate another CA issued (for the right name): the
    coordinator will not call it and its peers will not send to it; its sync fails at once,
    naming the certificate problem, and pve-node2 gets its copy all the same."""
    other_ca, cert, key = ensure_certificates(tmp_path, "other-cluster")
    stack.s.node_agent_settings["pve-node3"] = {"tls_cert_file": str(cert), "tls_key_file": str(key)}
    stack.agents["pve-node3"].stop()
    stack.start_agent("pve-node3", ca_file=other_ca)
    try:
        template_id, _ = local_template(api, stack, tmp_path, "foreign", 16)
        started = time.monotonic()
        start_sync(api, stack, template_id, "pve-node2", "pve-node3")
        tasks = {t["target_node"]["node_name"]: t for t in wait_tasks(api, template_id, timeout=60)}
        took = time.monotonic() - started
    finally:
        restart_agent(stack, "pve-node3")
    refused = tasks["pve-node3"]
    assert refused["status"] == "failed" and refused["attempts"] == 1, refused
    assert (
        "its certificate is not trusted (certificate verify failed: unable to get local issuer"
        in (refused["error_message"])
    ), refused
    assert took < 45
    assert tasks["pve-node2"]["status"] == "completed", tasks["pve-node2"]
    # Whichever node was to send to pve-node3 refused it too, at once, and said why.
    logs = "".join((stack.base / "logs" / f"agent-{n}.log").read_text() for n in ("pve-node1", "pve-node2"))
    refusals = [line for line in logs.splitlines() if "giving up on pve-node3" in line]
    assert refusals and "certificate verify failed" in refusals[-1], refusals


def _data_planes(stack: Stack) -> set[str]:
    """What every agent was told by the coordinator (its /health)."""
    health = [
        requests.get(stack.agent_url(n) + "/health", timeout=10, verify=str(stack.ca_file)).json()
        for n in stack.node_names()
    ]
    return {h["transfers"]["data_plane"] for h in health}


def test_the_insecure_data_plane_sends_image_bytes_in_the_clear_only_when_asked(
    stack: Stack, api: Api, tmp_path: Path
) -> None:
    assert _data_planes(stack) == {"tls"}  # the default
    tap = WireTap(stack.agent_port("pve-node2"))
    restart_coordinator(stack, data_plane="insecure")
    try:
        wait_for(lambda: _data_planes(stack) == {"insecure"}, 30, "agents told of the insecure data plane")
        with behind(stack, "pve-node2", tap):
            template_id, image = local_template(api, stack, tmp_path, "clear", 24)
            (task_id,) = start_sync(api, stack, template_id, "pve-node2")
            (task,) = wait_tasks(api, template_id)
    finally:
        restart_coordinator(stack)
        wait_for(lambda: _data_planes(stack) == {"tls"}, 30, "agents back on the TLS data plane")
    assert task["status"] == "completed", task
    assert sha256(received_copy(stack, "pve-node2", task_id)) == guest_sha256(image)
    # The session was opened over HTTPS, through the tap; the image went to the plain listener.
    assert sum(len(sent) for sent in tap.captured()) < image.stat().st_size / 4
    log = (stack.base / "logs" / "agent-pve-node1.log").read_text()
    assert f"streaming to pve-node2 (task {task_id}) from byte 0 of" in log
    assert "in the clear (http://127.0.0.1:" in log

"""Which PVE failures an import waits out, how long between tries, and what it then says."""

from __future__ import annotations

import pytest

from coordinator.inventory.pve_client import PveError
from shared.pve_outage import BACKOFF_MAX, Retries, backoff, transient_reason
from tests.unit.test_deadlines import Clock


@pytest.mark.parametrize(
    ("status", "text", "reason"),
    [
        # pvesh (the agent's local backend) when pmxcfs or the emulator is away; proxmoxer fakes 500
        (
            500,
            "POST /nodes/pve-node1/qemu: 500 : ipcc_send_rec[1] failed: Connection refused",
            "connection refused",
        ),
        (
            500,
            "GET /nodes/n/qemu: 500 : ipcc_send_rec[1] failed: [Errno 104] Connection reset by peer",
            "connection lost",
        ),
        (500, "ipcc_send_rec[1] failed: No such file or directory", "cluster filesystem unreachable"),
        # the https backend (requests) when pveproxy is down or slow
        (
            None,
            "GET /version: HTTPSConnectionPool(host='pve1', port=8006): Max retries exceeded "
            "(Caused by NewConnectionError('Failed to establish a new connection: "
            "[Errno 111] Connection refused'))",
            "connection refused",
        ),
        (
            None,
            "GET /version: HTTPSConnectionPool(host='pve1', port=8006): Read timed out. (read timeout=120)",
            "timed out",
        ),
        (None, "POST /nodes/n/qemu: PVE did not answer within 130 s", "timed out"),
        # pveproxy's answers for a daemon it cannot reach
        (502, "POST /nodes/n/qemu: 502 Bad Gateway", "HTTP 502"),
        (503, "POST /nodes/n/qemu: 503 Service Unavailable", "HTTP 503"),
        (595, "GET /nodes/n/qemu: 595 Connection refused", "HTTP 595"),
        (596, "GET /nodes/n/qemu: 596 Broken pipe", "HTTP 596"),
        (500, "unable to create VM 9000 - cfs-lock 'file-user_cfg' error: got timeout", "timed out"),
        (500, "cluster not ready - no quorum?", "no quorum"),
        # a task whose worker died with its daemon (the emulator's restart, a node's reboot)
        (None, "unexpected status", "its task died"),
    ],
)
def test_a_pve_that_does_not_answer_is_transient(status: int | None, text: str, reason: str) -> None:
    assert transient_reason(status, text) == reason


@pytest.mark.parametrize(
    ("status", "text"),
    [
        # PVE judged the request: the same request gets the same answer
        (400, "POST /nodes/n/qemu: 400 Parameter verification failed. - {'scsi0': 'invalid format'}"),
        (403, "POST /nodes/n/qemu: 403 Permission check failed (/vms/9000, VM.Allocate)"),
        (401, "401 Unauthorized: connection refused"),  # a 4xx whatever its text says
        # plain `die`s come back as 500 but name a permanent condition
        (500, "unable to create VM 9000 - storage 'nope' does not exist"),
        (500, "unable to create VM 9000 - can't find file '/staging/x.qcow2'"),
        (
            None,
            "unable to create VM 9000 - qemu-img: Could not open '/s/x.qcow2': Image is not in qcow2 format",
        ),
        # a full storage stays full until someone frees space
        (None, "qemu-img: error while writing at byte 1048576: No space left on device"),
        (500, "ipcc_send_rec[1] failed: No space left on device"),
        (None, "unable to create VM 9000 - copy failed: command 'qemu-img convert ...' failed: exit code 1"),
    ],
)
def test_a_pve_that_says_no_is_permanent(status: int | None, text: str) -> None:
    assert transient_reason(status, text) is None


def test_tries_back_off_from_1_s_to_at_most_5_s() -> None:
    assert [backoff(n) for n in range(1, 7)] == [1, 2, 4, 5, 5, 5]
    assert BACKOFF_MAX == 5


def test_retries_wait_out_an_outage_and_say_what_was_retried() -> None:
    clock = Clock()
    retries = Retries(clock)
    assert retries.failed("connection refused", "POST ...: Connection refused", remaining=600) == 1
    clock.now += 1.3
    assert retries.failed("connection refused", "GET ...: Connection refused", remaining=599) == 2
    clock.now += 2.2
    assert retries.failed("cluster filesystem unreachable", "ipcc_send_rec[1] failed", remaining=597) == 4
    clock.now += 4.5
    assert retries.failed("connection refused", "GET ...: Connection refused", remaining=592) == 5
    assert retries.count == 4
    assert retries.summary() == (
        "PVE did not answer (connection refused, cluster filesystem unreachable) 4 times over 8 s; "
        "last: GET ...: Connection refused"
    )


def test_the_last_try_fits_before_the_deadline_and_none_starts_after_it() -> None:
    clock = Clock()
    retries = Retries(clock)
    for _ in range(3):
        retries.failed("HTTP 503", "503", remaining=600)
    # the backoff would be 5 s; 3 s are left: a last try after 2 s, a second to spare for it
    assert retries.failed("HTTP 503", "503", remaining=3.0) == 2.0
    assert retries.failed("HTTP 503", "503", remaining=0.9) is None
    assert retries.summary().startswith("PVE did not answer (HTTP 503) 5 times over 0 s")
    once = Retries(clock)
    assert once.failed("timed out", "GET: timed out", remaining=0.5) is None
    assert once.summary() == "PVE did not answer (timed out) once over 0 s; last: GET: timed out"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            PveError("unreachable", "PVE API at https://pve1:8006 does not answer: Connection refused"),
            "connection refused",
        ),
        (
            PveError("timeout", "PVE API at https://pve1:8006 did not answer in time: read timeout"),
            "timed out",
        ),
        (PveError("api", "PVE GET cluster/resources failed: 503 Service Unavailable", 503), "HTTP 503"),
        (PveError("api", "PVE GET cluster/resources failed: 500 : no quorum", 500), "no quorum"),
        (PveError("api", "PVE GET cluster/resources failed: 400 Parameter verification failed.", 400), None),
        (PveError("auth", "PVE at https://pve1:8006 rejected API token root@pam!x (401 ...)"), None),
        (PveError("tls", "TLS verification of https://pve1:8006 failed (connection refused?)"), None),
    ],
)
def test_the_coordinator_waits_out_the_same_pve_failures(error: PveError, reason: str | None) -> None:
    assert error.transient() == reason

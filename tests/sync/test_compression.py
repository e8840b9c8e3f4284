"""zstd between agents, end to end: a compressible image synced through the coordinator
crosses compressed where the target accepts it (the links capped, so compressing pays)
and plain where the target's agent refuses it (``wire_compression = false``); both copies
are the uploaded image exactly, and both nodes get the template."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from tests.conftest import own_stack
from tests.support.api import Api
from tests.support.syncs import guest_sha256, receive_view, received_copy, sha256
from tests.support.uploads import storage_id, upload, wait_import
from tests.sync.test_scenarios import assert_template_copy
from tests.sync.test_staging_budget import sync_to, wait_done

MiB = 1 << 20
SEND_RATE = 24 * MiB  # every agent's cap: slower than the compressor
REFUSES = "pve-node2"
ACCEPTS = "pve-node3"


# Every agent capped; one of them refuses compression.
STACK_SETTINGS: dict[str, Any] = {
    "agent_settings": {"max_send_rate": SEND_RATE},
    "node_agent_settings": {REFUSES: {"wire_compression": False, "max_send_rate": SEND_RATE}},
}


@pytest.fixture(scope="module", params=["sqlite"])
def zstd_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return own_stack(request, tmp_path_factory, "zstd", **STACK_SETTINGS)


def compressible_raw(path: Path, mib: int) -> Path:
    """Lines of a made-up log, every fourth MiB random: about 3x with zstd."""
    with open(path, "wb") as f:
        for i in range(mib):
            if i % 4 == 3:
                f.write(secrets.token_bytes(MiB))
            else:
                text = b"".join(
                    b"%08d service[%d]: request %d done in %d ms\n" % (n, i, n * 7, n % 97)
                    for n in range(30_000)
                )
                f.write(text[:MiB])
    return path


def test_a_sync_crosses_compressed_where_accepted_and_plain_where_refused(
    zstd_stack: Stack, tmp_path: Path
) -> None:
    stack, api = zstd_stack, Api(zstd_stack.api, zstd_stack.admin_token)
    image = compressible_raw(tmp_path / "logs.raw", 32)
    data = upload(
        api, stack, image, f"zstd-{secrets.token_hex(3)}", storage_id(api, stack, "local", "pve-node1")
    )
    template_id = int(data.ok()["template_id"])
    assert wait_import(api, template_id)["upload_info"]["status"] == "imported"
    expected = guest_sha256(image)
    crossed = {}
    for node in (ACCEPTS, REFUSES):
        task_id = sync_to(api, stack, template_id, node)
        task = wait_done(api, task_id)
        view = receive_view(stack, node, task_id)
        assert view["state"] == "complete" and view["size"] == 32 * MiB, view
        crossed[node] = view["received_bytes"]
        assert sha256(received_copy(stack, node, task_id)) == expected
        assert_template_copy(stack, node, int(str(task["vmid"])), image, "raw")
    assert crossed[ACCEPTS] < 0.6 * 32 * MiB, crossed
    assert crossed[REFUSES] == 32 * MiB, crossed

"""A sync task's progress, as a user polling GET /sync-tasks/{id} sees it: real bytes, then the import."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from demo.stack import Stack
from tests.support.api import Api
from tests.support.syncs import SYNC_TIMEOUT
from tests.support.uploads import emulator
from tests.sync.conftest import SEND_RATE
from tests.sync.test_faults import local_template, start_sync

IMPORT_RATE = 40 << 20  # the emulator's qemu-img convert, bytes/s: the import takes seconds too
STATES = ["pending", "syncing", "importing", "completed"]


def poll_until_done(api: Api, task_id: int, every: float = 0.2) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + SYNC_TIMEOUT
    while not samples or samples[-1]["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, samples[-1]
        samples.append(api.get(f"/templates/sync-tasks/{task_id}").ok())
        time.sleep(every)
    return samples


def test_progress_follows_the_copied_bytes_then_the_import(
    slow_stack: Stack, slow_api: Api, tmp_path: Path
) -> None:
    api, stack = slow_api, slow_stack
    template_id, image = local_template(api, stack, tmp_path, "progress", 160)
    size = image.stat().st_size
    emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": IMPORT_RATE})
    try:
        (task_id,) = start_sync(api, stack, template_id, "pve-node2")
        samples = poll_until_done(api, task_id)
    finally:
        emulator(stack, "POST", "/pvesim/settings", {"import_rate_limit": 0})

    states = [state for state, _ in itertools.groupby(s["status"] for s in samples)]
    assert states == [s for s in STATES if s in states] and states[-3:] == STATES[1:], states
    progress = [s["progress"] for s in samples]
    assert progress == sorted(progress) and progress[-1] == 100

    # While copying: the bytes verified at the target, at least every second (160 MiB at
    # 24 MiB/s, after a second's burst, take ~6 s), the rate the sender's cap allows,
    # progress in proportion.
    copying = [s for s in samples if s["status"] == "syncing"]
    assert all(s["bytes_total"] == size for s in copying)
    assert len({s["bytes_done"] for s in copying if 0 < s["bytes_done"] < size}) >= 3, copying
    assert all(s["progress"] == 90 * s["bytes_done"] // size for s in copying)
    assert any(SEND_RATE / 4 <= s["rate_bytes_per_sec"] <= SEND_RATE * 1.5 for s in copying), copying

    # While importing: every byte is there, progress moves with qemu-img's own (90..99).
    importing = [s for s in samples if s["status"] == "importing"]
    assert all(s["bytes_done"] == size and s["rate_bytes_per_sec"] == 0 for s in importing), importing
    import_progress = [s["progress"] for s in importing]
    assert len(set(import_progress)) >= 2 and 90 <= min(import_progress) and max(import_progress) < 100

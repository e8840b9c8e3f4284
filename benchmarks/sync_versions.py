"""Benchmark ``sync-versions``: a new version rolled out to nodes that hold the old one.

Issue 14, item 5 (a) and (b):

(a) Five nodes in network namespaces on 1 Gbit/s links (tbf, as sync-fanout). Version 1 of
a template (a qcow2) is on every node. Version 2 is version 1 with ~5 % of the guest's data
rewritten in three regions and two regions zeroed whose sizes are not multiples of the
chunk size, then rebuilt with ``qemu-img convert`` (so its qcow2 layout has shifted: the
zeroed clusters are gone and everything after them moved). Measured: the bytes that cross
each target's link while version 2 rolls out (tc's counters: headers and TLS included), as
a fraction of version 2's file size (target <= 0.10), and the time from the rollout's start
(the version's import done) until all four targets hold every byte of version 2 verified
(their receives complete), against the same for a full copy of version 2 (a template of
its own, synced to the same four nodes) in the same run (target <= 0.2x). The PVE import
after the copy costs the same either way and is not included.

(b) On loopback: a raw image of 8 GiB virtual with 1 GiB of data synced to a node that
holds nothing of it: the bytes sent (the sync task's ``bytes_sent``) <= 1.05 GiB.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.base import Benchmark, Options
from benchmarks.fanout_report import NODES, SOURCE, TARGETS
from benchmarks.machine_bounds import checks_floor
from benchmarks.measure import settle, warm_cache
from benchmarks.multipart import post_file
from benchmarks.netns import ShapedNetwork, check_can_run
from benchmarks.node_disks import NodeDisks
from benchmarks.receives import follow
from benchmarks.report import GIB, MIB, Target, size_label, table
from benchmarks.stack import Api, ApiError, start_stack
from benchmarks.sync_fanout import namespaced_stack
from benchmarks.syncs import agent_connections, start_sync, upload_template, wait_synced
from benchmarks.system import require_program, run_command
from demo.stack import Stack

STORAGE = "local"
VIRTUAL = 1 * GIB
QUICK_VIRTUAL = 512 * MIB
DATA_SHARE = 0.75  # of the virtual size: random bytes (the rest stays zeros)
REWRITTEN_SHARE = 0.05  # of the data, in three regions
# Zeroed in version 2: sizes that are not multiples of the 4 MiB chunk.
ZEROED = [(0.30, 5 * MIB + 123_457), (0.62, 9 * MIB + 54_321)]
SENT_TARGET = 0.10
TIME_TARGET = 0.2
SPARSE_VIRTUAL = 8 * GIB
SPARSE_DATA = 1 * GIB
QUICK_SPARSE_VIRTUAL, QUICK_SPARSE_DATA = 2 * GIB, 256 * MIB
SPARSE_TARGET = 1.05
PIECE = 4 * MIB


def _random_into(f: Any, offset: int, length: int) -> None:
    f.seek(offset)
    while length:
        n = min(PIECE, length)
        f.write(os.urandom(n))
        length -= n


def _qcow2(raw: Path, out: Path) -> Path:
    run_command(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], timeout=600)
    return out


def make_versions(workdir: Path, virtual: int) -> tuple[Path, Path]:
    """(version 1, version 2) as qcow2 files (see the module's docstring)."""
    data = int(virtual * DATA_SHARE)
    raw1, raw2 = workdir / "v1.raw", workdir / "v2.raw"
    with open(raw1, "wb") as f:
        f.truncate(virtual)
        _random_into(f, 0, data)
    shutil.copyfile(raw1, raw2)
    with open(raw2, "r+b") as f:
        region = int(data * REWRITTEN_SHARE / 3)
        for at in (0.10, 0.45, 0.80):
            _random_into(f, int(data * at) + 4097, region)  # not on the chunk grid
        for at, length in ZEROED:
            f.seek(int(data * at) + 777)
            f.write(bytes(length))
    v1, v2 = _qcow2(raw1, workdir / "v1.qcow2"), _qcow2(raw2, workdir / "v2.qcow2")
    raw1.unlink()
    raw2.unlink()
    return v1, v2


class Rollout:
    """The namespaced system, version 1 of a template on every node."""

    def __init__(self, stack: Stack, net: ShapedNetwork) -> None:
        self.stack, self.net = stack, net
        self.api = Api(stack)
        self.agents = agent_connections(stack)
        self.ids = {node: self.api.node_id(node) for node in NODES}
        self.storage_id = self.api.storage_id(self.ids[SOURCE], STORAGE)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()

    def _follow(self, tasks: dict[str, int], started: float, size: int) -> tuple[float, int]:
        """(seconds from ``started`` until every target's receive is complete, the most bytes
        any target's link received meanwhile)."""
        before = self.net.counters()
        traces = follow(self.agents, tasks, size, timeout=1200, interval=0.05)
        seconds = max(trace.complete.at for trace in traces.values()) - started
        after = self.net.counters()
        received = max(after[node].received - before[node].received for node in tasks)
        return seconds, received

    def full_copy(self, v2: Path, virtual: int) -> tuple[float, int]:
        template_id = upload_template(self.stack, self.storage_id, v2, f"bench-full-{secrets.token_hex(3)}")
        settle()
        started = time.perf_counter()
        tasks = start_sync(self.api, template_id, {node: self.ids[node] for node in TARGETS})
        result = self._follow(tasks, started, virtual)
        wait_synced(self.api, list(tasks.values()), timeout=1200)
        self.api.delete_cascade(template_id)
        return result

    def version_rollout(self, v1: Path, v2: Path, virtual: int) -> tuple[float, int, list[dict[str, Any]]]:
        template_id = upload_template(self.stack, self.storage_id, v1, f"bench-ver-{secrets.token_hex(3)}")
        first = start_sync(self.api, template_id, {node: self.ids[node] for node in TARGETS})
        wait_synced(self.api, list(first.values()), timeout=1200)
        settle()
        reply = post_file(
            f"{self.stack.api}/templates/{template_id}/versions",
            self.stack.admin_token,
            {"wait": "true", "description": "version 2"},
            v2,
            timeout=1200,
        )
        started = time.perf_counter()
        data = reply.body.get("data") if isinstance(reply.body, dict) else None
        if reply.status != 200 or not isinstance(data, dict):
            raise ApiError(f"version upload: HTTP {reply.status}: {reply.body}")
        tasks = {str(t["target_node_name"]): int(t["task_id"]) for t in data["sync_tasks"]}
        if sorted(tasks) != sorted(TARGETS):
            raise ApiError(f"the rollout went to {sorted(tasks)}, not to {TARGETS}")
        seconds, received = self._follow(tasks, started, virtual)
        wait_synced(self.api, list(tasks.values()), timeout=1200)
        rows = [self.api.call("GET", f"/templates/sync-tasks/{task_id}") for task_id in tasks.values()]
        self.api.delete_cascade(template_id)
        return seconds, received, rows


def _checks_floor(workdir: Path, v2: Path) -> float:
    """machine_bounds.checks_floor over version 2's guest view, for the four targets."""
    guest = workdir / "v2-guest.raw"
    run_command(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(v2), str(guest)], timeout=600)
    try:
        return checks_floor(guest, len(TARGETS))
    finally:
        guest.unlink()


def _part_a(options: Options) -> list[Target]:
    check_can_run()
    virtual = QUICK_VIRTUAL if options.quick else VIRTUAL
    with contextlib.ExitStack() as exits:
        print(f"  versions of {size_label(virtual)} virtual, {DATA_SHARE:.0%} data", flush=True)
        v1, v2 = make_versions(options.workdir, virtual)
        v2_size = v2.stat().st_size
        floor_s = _checks_floor(options.workdir, v2)
        net = exits.enter_context(ShapedNetwork(NODES))
        net.check_reachable()
        # A node holds version 1, the full copy and version 2 at once (raw, sparse).
        disks = exits.enter_context(NodeDisks(options.workdir / "disks", NODES, 3 * virtual))
        stack = namespaced_stack(options.workdir / "stack", net, disks)
        exits.callback(stack.stop)
        stack.start()
        rollout = Rollout(stack, net)
        exits.callback(rollout.close)
        rows, runs = [], []
        for rep in range(options.reps):
            warm_cache(v2)
            full_s, full_bytes = rollout.full_copy(v2, virtual)
            delta_s, delta_bytes, tasks = rollout.version_rollout(v1, v2, virtual)
            runs.append((full_s, delta_s, delta_bytes, full_bytes))
            sent = max(int(t["bytes_sent"]) for t in tasks)
            reused = min(int(t["bytes_reused"]) for t in tasks)
            rows.append(
                [
                    str(rep + 1),
                    f"{full_s:.2f}",
                    f"{delta_s:.2f}",
                    f"{delta_s / full_s:.3f}",
                    f"{full_bytes / MIB:.1f}",
                    f"{delta_bytes / MIB:.1f}",
                    f"{sent / MIB:.1f}",
                    f"{reused / MIB:.1f}",
                ]
            )
            print(f"  rep {rep + 1}: full {full_s:.2f} s, version 2 {delta_s:.2f} s", flush=True)
        print(
            table(
                [
                    "rep",
                    "full s",
                    "v2 s",
                    "ratio",
                    "full MiB/link",
                    "v2 MiB/link",
                    "bytes_sent MiB",
                    "reused MiB",
                ],
                rows,
            )
        )
        print(f"  version 2's file: {v2_size / MIB:.1f} MiB (qcow2); a full copy moves its guest view")
    runs.sort(key=lambda r: r[1] / r[0])
    full_s, delta_s, delta_bytes, _ = runs[len(runs) // 2]
    print(
        f"  the checks alone (sha256 of v2's guest view, BLAKE3 of its chunks), {len(TARGETS)} nodes' "
        f"at once on this machine's {os.cpu_count()} cores: {floor_s:.2f} s = {floor_s / full_s:.2f} "
        "of the full copy, the least ratio any rollout can reach here"
    )
    return [
        Target(
            "sync-versions: bytes to a node holding v1 / v2's file size",
            delta_bytes / v2_size,
            "<=",
            SENT_TARGET,
        ),
        Target("sync-versions: time to 4 nodes, v2 rollout / full copy", delta_s / full_s, "<=", TIME_TARGET),
    ]


def _part_b(options: Options) -> list[Target]:
    virtual, data = (
        (QUICK_SPARSE_VIRTUAL, QUICK_SPARSE_DATA) if options.quick else (SPARSE_VIRTUAL, SPARSE_DATA)
    )
    image = options.workdir / "sparse.raw"
    with open(image, "wb") as f:
        f.truncate(virtual)
        stride = virtual // 8
        for i in range(8):  # the data in eight runs across the disk
            _random_into(f, i * stride + 12_345, data // 8)
    stack = start_stack(options.workdir / "sparse-stack")
    try:
        api = Api(stack)
        ids = {node: api.node_id(node) for node in ("pve-node1", "pve-node2")}
        template_id = upload_template(stack, api.storage_id(ids["pve-node1"], STORAGE), image, "bench-sparse")
        tasks = start_sync(api, template_id, {"pve-node2": ids["pve-node2"]})
        wait_synced(api, list(tasks.values()), timeout=1200)
        task = api.call("GET", f"/templates/sync-tasks/{tasks['pve-node2']}")
    finally:
        stack.stop()
        image.unlink()
    sent = int(task["bytes_sent"])
    print(
        f"  raw {size_label(virtual)} virtual, {size_label(data)} data: bytes_sent {sent / MIB:.1f} MiB, "
        f"bytes_reused {int(task['bytes_reused']) / MIB:.1f} MiB, "
        f"bytes_total {int(task['bytes_total']) / MIB:.1f} MiB"
    )
    return [
        Target(
            f"sync-versions: bytes sent for a raw image with {size_label(data)} of data / its data",
            sent / data,
            "<=",
            SPARSE_TARGET,
        )
    ]


def run(options: Options) -> list[Target]:
    require_program("qemu-img", "qemu-utils", "the images are made and checked with it")
    return _part_b(options) + _part_a(options)


BENCHMARK = Benchmark(
    "sync-versions",
    "a new version to 4 nodes holding the old one (netns, 1 Gbit/s): bytes and time vs a full copy; "
    "zeros never sent",
    run,
)

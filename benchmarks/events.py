"""``events``: live events (GET /api/v1/events, issue 15 item 1) on a real stack (SQLite).

(a) 100 idle subscribers: the coordinator's RSS and CPU while they are connected, against the
same coordinator with none in the same run (each over the same window, after a settle); the
difference per subscriber. With a subscriber the change reader polls (4 times a second), so
the first subscriber also pays for it: given apart, from one subscriber's figures.

(b) A sync's events: one subscriber watches a template synced to two nodes; per object, the
most messages in any one second (target <= 4) and the rate while it copied. The sync writes
its progress about once a second, so (c) writes one sync task's row ``FAST_WRITES`` times a
second (straight to the database, as a faster writer or many replicas would) and counts
what a subscriber gets: at most 4 a second, and the last state written.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.base import Benchmark, Options
from benchmarks.measure import cpu_seconds, proc_status
from benchmarks.report import MIB, Target, table
from benchmarks.stack import Api, start_stack
from benchmarks.syncs import start_sync, upload_template, wait_synced
from demo.stack import Stack

SUBSCRIBERS = 100
WINDOW, QUICK_WINDOW = 20.0, 8.0  # seconds over which CPU is counted
SETTLE = 2.0
IMAGE, QUICK_IMAGE = 512 * MIB, 128 * MIB
MAX_PER_SECOND = 4
FAST_WRITES, FAST_SECONDS = 20, 5.0
# Targets of our own (the issue names none): an idle subscriber costs little.
MAX_KIB_PER_SUBSCRIBER = 100.0
MAX_CPU_PERCENT_PER_SUBSCRIBER = 0.1  # of one core


class Subscribers:
    """``count`` WebSocket clients in a thread of their own, each keeping what it receives."""

    def __init__(self, url: str, token: str, count: int, params: dict[str, str] | None = None) -> None:
        self.url, self.token, self.count, self.params = url, token, count, params or {}
        self.received: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(count)]
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), daemon=True
        )

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as http:
            sockets = [await http.ws_connect(self.url, params=self.params) for _ in range(self.count)]
            self._connected.set()
            readers = [asyncio.create_task(self._read(ws, self.received[i])) for i, ws in enumerate(sockets)]
            await self._stop.wait()
            for ws in sockets:
                await ws.close()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, into: list[tuple[float, dict[str, Any]]]
    ) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                into.append((time.monotonic(), json.loads(msg.data)))

    def __enter__(self) -> Subscribers:
        self._thread.start()
        if not self._connected.wait(60):
            raise RuntimeError(f"{self.count} subscribers did not connect within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def _usage(pid: int, window: float) -> tuple[int, float]:
    """RSS at the end and CPU seconds over ``window`` (after SETTLE)."""
    time.sleep(SETTLE)
    cpu = cpu_seconds(pid)
    time.sleep(window)
    return proc_status(pid).get("VmRSS", 0), cpu_seconds(pid) - cpu


def _most_in_one_second(times: list[float]) -> int:
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def _random_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    return path


def _idle(stack: Stack, window: float, ws: str) -> tuple[list[Target], str]:
    pid = stack.coordinator.pid if stack.coordinator else 0
    figures: dict[str, tuple[int, float]] = {"none": _usage(pid, window)}
    with Subscribers(ws, stack.admin_token, 1):
        figures["1"] = _usage(pid, window)
    with Subscribers(ws, stack.admin_token, SUBSCRIBERS):
        figures[str(SUBSCRIBERS)] = _usage(pid, window)
    rows = [
        [who, f"{rss / MIB:.1f}", f"{cpu:.2f}", f"{100 * cpu / window:.2f}"]
        for who, (rss, cpu) in figures.items()
    ]
    (rss0, cpu0), (rss1, cpu1), (rss_n, cpu_n) = figures.values()
    per_kib = (rss_n - rss1) / (SUBSCRIBERS - 1) / 1024
    per_cpu = 100 * (cpu_n - cpu1) / (SUBSCRIBERS - 1) / window
    text = (
        table(["subscribers", "RSS MiB", f"CPU s in {window:.0f} s", "CPU % of a core"], rows)
        + f"\n  the change reader (first subscriber): {(rss1 - rss0) / 1024:.0f} KiB,"
        f" {100 * (cpu1 - cpu0) / window:.2f} % of a core"
        + f"\n  each further idle subscriber: {per_kib:.1f} KiB, {per_cpu:.4f} % of a core"
        + f"\n  {SUBSCRIBERS} against none: RSS x{rss_n / max(rss0, 1):.3f},"
        f" CPU x{cpu_n / max(cpu0, 1e-9):.2f}"
    )
    return [
        Target("RSS per idle subscriber", per_kib, "<=", MAX_KIB_PER_SUBSCRIBER, "KiB"),
        Target("CPU per idle subscriber", per_cpu, "<=", MAX_CPU_PERCENT_PER_SUBSCRIBER, "% of a core"),
    ], text


def _sync_rate(stack: Stack, image: Path, ws: str) -> tuple[list[Target], str]:
    api = Api(stack)
    node1 = api.node_id("pve-node1")
    template_id = upload_template(stack, api.storage_id(node1, "local"), image, f"ev-{secrets.token_hex(3)}")
    targets = {n: api.node_id(n) for n in ("pve-node2", "pve-node3")}
    with Subscribers(ws, stack.admin_token, 1, {"template_id": str(template_id)}) as sub:
        started = time.monotonic()
        tasks = start_sync(api, template_id, targets)
        wait_synced(api, list(tasks.values()), timeout=600)
        took = time.monotonic() - started
        time.sleep(1.0)  # the final states
    by_object: dict[tuple[str, int], list[float]] = {}
    syncing: dict[tuple[str, int], list[float]] = {}
    for at, message in sub.received[0]:
        key = (message["kind"], message["id"])
        by_object.setdefault(key, []).append(at)
        if message["status"] == "syncing":
            syncing.setdefault(key, []).append(at)
    rows = []
    most = 0
    for key, times in sorted(by_object.items()):
        moving = syncing.get(key, [])
        span = moving[-1] - moving[0] if len(moving) > 1 else 0.0
        rate = f"{(len(moving) - 1) / span:.2f}" if span else "-"
        most = max(most, _most_in_one_second(times))
        rows.append(
            [f"{key[0]} {key[1]}", str(len(times)), str(len(moving)), rate, str(_most_in_one_second(times))]
        )
    text = (
        f"  a {image.stat().st_size // MIB} MiB image synced to 2 nodes in {took:.1f} s; per object:\n"
        + table(["object", "messages", "while syncing", "per s syncing", "most in 1 s"], rows)
    )
    return [Target("messages per object in any 1 s", float(most), "<=", MAX_PER_SECOND)], text


def _fast_writes(stack: Stack, task_id: int, ws: str) -> tuple[list[Target], str]:
    db = sqlite3.connect(stack.base / "coordinator.db", timeout=30)
    update = "UPDATE template_sync_task SET progress = ?, updated_at = ? WHERE id = ?"
    writes = int(FAST_WRITES * FAST_SECONDS)
    try:
        with Subscribers(ws, stack.admin_token, 1, {"task_id": str(task_id), "kind": "sync_task"}) as sub:
            time.sleep(SETTLE)
            for step in range(writes):
                now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                db.execute(update, (step % 100, now, task_id))
                db.commit()
                time.sleep(1 / FAST_WRITES)
            time.sleep(SETTLE)
        db.execute(update, (100, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), task_id))
        db.commit()
    finally:
        db.close()
    changes = [(at, m) for at, m in sub.received[0] if not m.get("snapshot")]
    times = [at for at, _ in changes]
    most = _most_in_one_second(times)
    last = changes[-1][1]["progress"] if changes else None
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    text = (
        f"  {writes} writes of one row in {FAST_SECONDS:.0f} s ({FAST_WRITES}/s): {len(changes)} messages"
        f" ({(len(changes) - 1) / span if span else 0:.2f}/s), most in 1 s {most}, last progress {last}"
        f" (written last: {(writes - 1) % 100})"
    )
    return [
        Target("messages per second of a row written 20/s", float(most), "<=", MAX_PER_SECOND),
        Target("last state sent", float(last == (writes - 1) % 100), ">=", 1.0, note="1: yes"),
    ], text


def run(options: Options) -> list[Target]:
    stack = start_stack(options.workdir / "stack")
    ws = stack.api.replace("http://", "ws://") + "/events"
    try:
        window = QUICK_WINDOW if options.quick else WINDOW
        idle_targets, idle_text = _idle(stack, window, ws)
        print(f"\n  (a) idle subscribers\n{idle_text}", flush=True)
        image = _random_image(options.workdir / "image.raw", QUICK_IMAGE if options.quick else IMAGE)
        try:
            rate_targets, rate_text = _sync_rate(stack, image, ws)
        finally:
            image.unlink()
        print(f"\n  (b) a sync's events\n{rate_text}", flush=True)
        fast_targets, fast_text = _fast_writes(stack, 1, ws)
        print(f"\n  (c) a row written {FAST_WRITES} times a second\n{fast_text}", flush=True)
        return idle_targets + rate_targets + fast_targets
    finally:
        stack.stop()


BENCHMARK = Benchmark(
    "events",
    "live events: 100 idle WebSocket subscribers' memory and CPU; messages per object during a sync",
    run,
)

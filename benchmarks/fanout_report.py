"""What sync-fanout measured, per repetition, and how it is printed and judged."""

from __future__ import annotations

import os
from dataclasses import dataclass

from benchmarks.chain_timing import ChainTiming, HopTiming
from benchmarks.measure import CpuSplit, median
from benchmarks.netns import RATE_BITS, LinkBytes
from benchmarks.receives import ReceiveTrace, Sample
from benchmarks.report import Target, cpu_split_table, size_label, table

NODES = [f"pve-node{i}" for i in range(1, 6)]
SOURCE, TARGETS = NODES[0], NODES[1:]
LINK_BYTES_PER_SEC = RATE_BITS / 8
# tbf counts whole frames: 1514 bytes on the wire for every 1448 bytes of TCP payload (calibration).
TCP_CEILING = 1448 / 1514
GOODPUT_PERCENT = 95.0
RATIO_TARGET = 1.3


@dataclass
class SyncRun:
    """One POST /templates/{id}/sync, followed at every target."""

    traces: dict[str, ReceiveTrace]
    posted: float
    cpu_start: dict[str, float]
    machine_start: float
    split_start: dict[str, CpuSplit]
    links_before: dict[str, LinkBytes]
    links_after: dict[str, LinkBytes]

    @property
    def timing(self) -> ChainTiming:
        return ChainTiming({node: HopTiming.of_trace(trace) for node, trace in self.traces.items()})

    @property
    def _last(self) -> Sample:
        return max(self.traces.values(), key=lambda t: t.complete.at).complete

    @property
    def _seconds(self) -> float:
        return self._last.at - self.posted

    def cpu(self, node: str) -> float:
        """CPU seconds of the node's agent, POST -> last complete."""
        return self._last.cpu[node] - self.cpu_start[node]

    def split(self, node: str) -> CpuSplit:
        """The node's agent: user/system, event loop/other threads, POST -> last complete."""
        return self._last.split[node] - self.split_start[node]

    @property
    def machine_cores(self) -> float:
        """Cores the whole machine kept busy, POST -> last complete."""
        return (self._last.machine - self.machine_start) / self._seconds

    @property
    def agent_cores(self) -> float:
        return sum(self.cpu(node) for node in self.cpu_start) / self._seconds

    def link(self, node: str) -> LinkBytes:
        before, after = self.links_before[node], self.links_after[node]
        return LinkBytes(after.sent - before.sent, after.received - before.received)


@dataclass
class Rep:
    one: SyncRun
    four: SyncRun
    relay_one: ChainTiming
    relay_four: ChainTiming

    @property
    def goodput(self) -> float:
        """The single transfer's stream rate as a fraction of the link rate."""
        return self.one.timing.first_rate / LINK_BYTES_PER_SEC

    @property
    def ratio(self) -> float:
        return self.four.timing.to_done / self.one.timing.to_done

    @property
    def relay_goodput(self) -> float:
        return self.relay_one.first_rate / LINK_BYTES_PER_SEC

    @property
    def relay_ratio(self) -> float:
        return self.relay_four.to_done / self.relay_one.to_done


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _med(timings: list[ChainTiming], figure: str) -> float:
    return median([getattr(t, figure) for t in timings])


def _steady(reps: list[Rep]) -> float:
    rates = [r.one.traces[TARGETS[0]].steady_rate for r in reps]
    return median([r for r in rates if r is not None] or [0.0])


def _figures(reps: list[Rep]) -> None:
    one, four = [r.one.timing for r in reps], [r.four.timing for r in reps]
    relay_one, relay_four = [r.relay_one for r in reps], [r.relay_four for r in reps]
    n = len(TARGETS)

    def row(label: str, figure: str, agents: list[ChainTiming], relay: list[ChainTiming]) -> list[str]:
        return [label, f"{_med(agents, figure):.2f}", f"{_med(relay, figure):.2f}"]

    def ratio(label: str, figure: str) -> list[str]:
        agents = median([getattr(f, figure) / getattr(o, figure) for f, o in zip(four, one, strict=True)])
        relay = median(
            [getattr(f, figure) / getattr(o, figure) for f, o in zip(relay_four, relay_one, strict=True)]
        )
        return [label, f"{agents:.3f}", f"{relay:.3f}"]

    rate, relay_rate = _med(one, "first_rate"), _med(relay_one, "first_rate")
    rows = [
        ["one transfer: stream MB/s (first -> all bytes)", f"{rate / 1e6:.1f}", f"{relay_rate / 1e6:.1f}"],
        [
            "one transfer: of the link rate",
            f"{rate / LINK_BYTES_PER_SEC:.3f}",
            f"{relay_rate / LINK_BYTES_PER_SEC:.3f}",
        ],
        ["one transfer: steady rate MB/s (fit, 5-95 % of the bytes)", f"{_steady(reps) / 1e6:.1f}", "-"],
        row("1 target: first bytes -> all bytes, s", "to_all", one, relay_one),
        row("1 target: first bytes -> complete, s", "to_done", one, relay_one),
        row(f"{n} targets: first bytes -> all bytes at the last, s", "to_all", four, relay_four),
        row(f"{n} targets: first bytes -> last complete, s", "to_done", four, relay_four),
        ratio(f"ratio {n}/1 to complete (the target)", "to_done"),
        ratio(f"ratio {n}/1 to all bytes (no fdatasync)", "to_all"),
    ]
    print(table(["figure (median)", "agents", "plain TCP relay"], rows))
    print(
        "  (agents: 'first bytes' = the first 20 ms poll showing verified bytes, 'complete' = fdatasync'ed "
        "and the sha256 matched; the PVE import after it is not included. Plain TCP relay: the same chain, "
        "recv/write/send 1 MiB at a time, fdatasync at the end, no digests. A push from the source to each "
        f"target would make the ratio about {n}. TCP through tbf at MTU 1500 carries at most 1448/1514 = "
        f"{TCP_CEILING:.3f} of the link.)"
    )
    posted = median([r.four.timing.start - r.four.posted for r in reps])
    print(f"  POST -> first verified bytes at the first target: {_ms(posted)} ms ({n} targets)")


def _cpu(reps: list[Rep]) -> None:
    def row(label: str, figure: str) -> list[str]:
        return [
            label,
            f"{median([getattr(r.one, figure) for r in reps]):.2f}",
            f"{median([getattr(r.four, figure) for r in reps]):.2f}",
        ]

    print("\n  CPU seconds per agent during the sync (POST -> last complete), median")
    rows = [
        [
            node,
            f"{median([r.one.cpu(node) for r in reps]):.2f}",
            f"{median([r.four.cpu(node) for r in reps]):.2f}",
        ]
        for node in NODES
    ]
    rows.append(row(f"machine busy, cores of {os.cpu_count()}", "machine_cores"))
    rows.append(row("agents, cores", "agent_cores"))
    print(table(["agent", "1 target", f"{len(TARGETS)} targets"], rows))
    print(
        "  (machine busy from /proc/stat: the agents, the kernel's veth/bridge/tbf work, the emulator, the "
        "coordinator and anything else running; softirq work is charged to whichever process it interrupts)"
    )
    print(f"\n  where the agents' CPU goes in the {len(TARGETS)}-target sync, CPU s, median (/proc/PID/task)")
    print(cpu_split_table({node: [r.four.split(node) for r in reps] for node in NODES}, first="agent"))
    print(
        "  (event loop = the main thread: HTTP, framing, socket reads/writes, and the kernel's receive "
        "work charged to it; other threads: the worker that checks digests, writes and hashes, file reads)"
    )


def _per_target(run: SyncRun, relay: ChainTiming) -> None:
    timing = run.timing
    print(
        f"\n  {len(TARGETS)}-target sync of the last rep, per target in chain order: ms from the first "
        "bytes at the first target (agents | plain TCP relay)"
    )
    rows = []
    for node, hop in sorted(timing.hops.items(), key=lambda item: item[1].first):
        ref = relay.hops[node]
        rows.append(
            [
                node,
                f"{_ms(hop.first - timing.start)} | {_ms(ref.first - relay.start)}",
                f"{_ms(hop.all - timing.start)} | {_ms(ref.all - relay.start)}",
                f"{_ms(hop.done - timing.start)} | {_ms(ref.done - relay.start)}",
                f"{hop.rate / 1e6:.1f} | {ref.rate / 1e6:.1f}",
            ]
        )
    print(table(["target", "first bytes", "all bytes", "complete", "stream MB/s"], rows))


def _links(run: SyncRun, size: int) -> None:
    print(
        f"\n  what each node's link carried during the {len(TARGETS)}-target sync of the last rep "
        "(tc tbf counters: L2 bytes, frame headers and the agents' control traffic included)"
    )
    rows = []
    for node in NODES:
        link = run.link(node)
        rows.append(
            [node, f"{link.sent / 1e6:.1f}", f"{link.sent / size:.3f}", f"{link.received / 1e6:.1f}",
             f"{link.received / size:.3f}"]
        )  # fmt: skip
    print(table(["node", "sent MB", "sent / image", "received MB", "received / image"], rows))
    print(f"  (1514/1448 = {1 / TCP_CEILING:.3f}: one image across a link, TCP/IP/Ethernet headers included)")


def report(reps: list[Rep], size: int, plane: str) -> list[Target]:
    print(
        f"\n  data plane {plane}: {size_label(size)}, {len(reps)} reps; link 1 Gbit/s = 125 MB/s each way "
        "(MB = 10^6 bytes)"
    )
    _figures(reps)
    _cpu(reps)
    _per_target(reps[-1].four, reps[-1].relay_four)
    _links(reps[-1].four, size)
    label = f"{size_label(size)}, data plane {plane}"
    goodput = median([r.goodput for r in reps]) * 100
    ratio = median([r.ratio for r in reps])
    return [
        Target(f"goodput of one transfer / link rate, {label}", goodput, ">=", GOODPUT_PERCENT, "%"),
        Target(f"time to {len(TARGETS)} targets / time to 1 target, {label}", ratio, "<=", RATIO_TARGET),
    ]

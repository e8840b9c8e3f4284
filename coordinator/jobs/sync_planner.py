"""Which due sync tasks start now, as which transfer chains (a pure function, no I/O).

A chain is ``source -> target1 -> target2 -> ...``: the source sends the image once and
every target relays what it has verified to the next one, so one template synced to N
nodes crosses each link once instead of leaving the source N times.

Per-node limits hold across everything running: a node receives at most
``max_inbound`` images at a time and sends at most ``max_outbound`` (a relay counts as
both). A target whose node is busy or whose agent is not live waits for a later round.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Due:
    """A pending sync task whose time has come."""

    task_id: int
    upload_id: int
    target_node_id: int


@dataclass(frozen=True)
class Copy:
    """A node holding a complete, verified copy of an upload's image (a possible source)."""

    upload_id: int
    node_id: int
    staged_name: str
    is_import_node: bool


@dataclass
class Chain:
    upload_id: int
    source: Copy
    hops: list[Due] = field(default_factory=list)


@dataclass
class Load:
    """Transfers running now, per node."""

    inbound: Counter[int] = field(default_factory=Counter)
    outbound: Counter[int] = field(default_factory=Counter)


def plan_chains(
    due: list[Due],
    copies: list[Copy],
    live_nodes: set[int],
    load: Load,
    max_inbound: int,
    max_outbound: int,
) -> list[Chain]:
    inbound, outbound = Counter(load.inbound), Counter(load.outbound)
    chains: list[Chain] = []
    by_upload: dict[int, list[Due]] = {}
    for d in sorted(due, key=lambda d: d.task_id):
        by_upload.setdefault(d.upload_id, []).append(d)

    for upload_id, waiting in by_upload.items():
        waiting = [d for d in waiting if d.target_node_id in live_nodes]
        sources = [c for c in copies if c.upload_id == upload_id and c.node_id in live_nodes]
        while waiting:
            free = [c for c in sources if outbound[c.node_id] < max_outbound]
            if not free:
                break
            # The least busy source; the import node's own copy first among equals.
            source = min(free, key=lambda c: (outbound[c.node_id], not c.is_import_node, c.node_id))
            chain = Chain(upload_id, source)
            tail = source.node_id
            left: list[Due] = []
            for d in waiting:
                can_take = inbound[d.target_node_id] < max_inbound and d.target_node_id != source.node_id
                if can_take and outbound[tail] < max_outbound:
                    chain.hops.append(d)
                    inbound[d.target_node_id] += 1
                    outbound[tail] += 1
                    tail = d.target_node_id
                else:
                    left.append(d)
            if not chain.hops:
                break
            chains.append(chain)
            waiting = left
    return chains

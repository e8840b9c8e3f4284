"""What `--wait` waits for: the imports, sync tasks and clones a command started, each one
kept at its latest known state (pure).

States arrive from the events stream (contract §6.4) and from GETs that fill in what the
stream cannot say (an object that finished before the stream was open is no longer
active, so the stream does not send it). Both are dicts with the event's field names.
A final state is kept, and a state behind the one held is ignored: a stale "syncing" that
arrives after "importing" or "completed" changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The API's final statuses, by kind of work, and the one that means it worked.
FINAL: dict[str, frozenset[str]] = {
    "upload": frozenset({"imported", "failed"}),
    "sync_task": frozenset({"completed", "failed", "canceled"}),
    "clone": frozenset({"completed", "failed"}),
}
SUCCEEDED = {"upload": "imported", "sync_task": "completed", "clone": "completed"}
# The order each kind's statuses come in: a state behind the one held is stale (the stream's
# first messages describe the moment it opened, which a GET made after may have passed).
ORDER: dict[str, tuple[str, ...]] = {
    "upload": ("uploading", "uploaded", "importing"),
    "sync_task": ("pending", "syncing", "importing"),
    "clone": ("pending", "waiting_for_sync", "cloning"),
}


def _rank(kind: str, status: str) -> int:
    order = ORDER[kind]
    if status in order:
        return order.index(status)
    return len(order) if status in FINAL[kind] else -1  # a status this client does not know: first


@dataclass
class Item:
    kind: str  # upload (its import) | sync_task | clone
    id: int
    label: str  # what the user sees, e.g. "pve-node2 sync #12"
    status: str = "pending"
    progress: int = 0
    bytes_done: int | None = None
    bytes_total: int | None = None
    rate: int | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL[self.kind]

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED[self.kind]


class Work:
    """The items of one command, by (kind, id)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.items = {(i.kind, i.id): i for i in items}

    def apply(self, state: Mapping[str, Any]) -> Item | None:
        """Take ``state`` in; the item if it is one of ours and changed, else None."""
        try:
            item = self.items.get((str(state["kind"]), int(state["id"])))
        except (KeyError, TypeError, ValueError):
            return None
        if item is None or item.final:
            return None
        status = str(state.get("status") or item.status)
        behind = (_rank(item.kind, status), int(state.get("progress") or 0)) < (
            _rank(item.kind, item.status),
            item.progress,
        )
        if behind:
            return None
        before = (item.status, item.progress, item.bytes_done, item.bytes_total, item.rate, item.error)
        item.status = status
        if state.get("progress") is not None:
            item.progress = int(state["progress"])
        for name, key in (
            ("bytes_done", "bytes_done"),
            ("bytes_total", "bytes_total"),
            ("rate", "rate_bytes_per_sec"),
        ):
            if state.get(key) is not None:
                setattr(item, name, int(state[key]))
        item.error = state.get("error_message") or item.error
        if item.ok:
            item.progress = 100
        after = (item.status, item.progress, item.bytes_done, item.bytes_total, item.rate, item.error)
        return item if after != before else None

    @property
    def doomed(self) -> bool:
        """The import failed: its sync tasks have nothing to copy (the coordinator fails them
        soon after; ``follow`` waits a little for that, not for ever)."""
        return any(i.kind == "upload" and i.status == "failed" for i in self.items.values())

    @property
    def done(self) -> bool:
        return all(i.final for i in self.items.values())

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items.values() if i.final and not i.ok]

    @property
    def succeeded(self) -> bool:
        return all(i.ok for i in self.items.values())

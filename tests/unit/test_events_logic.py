"""The pure parts of live events: filters, the per-object throttle, events from rows, the
change log that tells a row read again from a change, and events tickets."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from coordinator.events import shaping
from coordinator.events import tickets as event_tickets
from coordinator.events.changes import ChangeLog, SnapshotFence, Watermark
from coordinator.events.filters import BadFilter, EventFilter, parse_kinds
from coordinator.events.hub import Subscription
from coordinator.events.throttle import Coalescer
from shared.messages import decode
from shared.messages.events import Event, encode_event
from shared.tickets import TicketInvalid, TicketSigner, TicketVerifier
from tests.support.events import transfer_ticket

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def event(status: str = "syncing", done: int = 0, kind: str = "sync_task", id: int = 1, **kw: Any) -> Event:
    fields: dict[str, Any] = dict(
        kind=kind, id=id, template_id=7, status=status, progress=0, bytes_done=done, bytes_total=100,
        rate_bytes_per_sec=0, error_message=None, at=T0, version=1,
    )  # fmt: skip
    return Event(**(fields | kw))


# ---------------------------------------------------------------- filters


def test_kinds_default_to_all_allowed_and_unknown_names_the_parameter() -> None:
    assert parse_kinds(None) == {"upload", "sync_task", "clone", "version"}
    assert parse_kinds("clone, upload") == {"clone", "upload"}
    with pytest.raises(BadFilter) as exc:
        parse_kinds("sync_task,bogus")
    assert exc.value.field == "kind" and "bogus" in str(exc.value)
    with pytest.raises(BadFilter):
        parse_kinds("upload", allowed=("sync_task",))  # the sync-tasks route takes only its kind


def test_filter_matches_every_given_condition() -> None:
    wanted = EventFilter(template_id=7, task_id=1, kinds=frozenset({"sync_task"}))
    assert wanted.matches(event())
    assert not wanted.matches(event(id=2))
    assert not wanted.matches(event(template_id=8))
    assert not wanted.matches(event(kind="clone"))
    assert EventFilter().matches(event(kind="upload", id=99, template_id=None))


# ---------------------------------------------------------------- throttle


def test_a_lone_change_goes_out_at_once_and_then_at_most_4_a_second() -> None:
    c: Coalescer[Event] = Coalescer(0.25)
    sent = []
    now = 0.0
    for step in range(100):  # 100 changes in one second, every 10 ms
        now = step * 0.01
        c.offer(1, event(done=step))
        sent += c.due(now)
    while (wait := c.next_due(now)) is not None:
        now += wait
        sent += c.due(now)
    assert sent[0].bytes_done == 0  # the first without delay
    assert len(sent) <= 5  # 0, 0.25, 0.5, 0.75 and the last state at 1.0
    assert sent[-1].bytes_done == 99  # the latest state wins, and is always sent


def test_no_status_is_lost_even_inside_one_interval() -> None:
    c: Coalescer[Event] = Coalescer(0.25)
    c.offer(1, event("pending"))
    assert [e.status for e in c.due(0.0)] == ["pending"]
    for status, done in (("syncing", 10), ("syncing", 50), ("importing", 100), ("completed", 100)):
        c.offer(1, event(status, done))
    out = [c.due(t) for t in (0.1, 0.25, 0.5, 0.75, 1.0)]
    assert [[(e.status, e.bytes_done) for e in batch] for batch in out] == [
        [],
        [("syncing", 50)],
        [("importing", 100)],
        [("completed", 100)],
        [],
    ]
    assert c.next_due(1.0) is None and c.waiting() == 0


def test_objects_are_throttled_apart() -> None:
    c: Coalescer[Event] = Coalescer(0.25)
    for i in range(3):
        c.offer(i, event(id=i))
    assert len(c.due(0.0)) == 3
    c.offer(0, event(id=0, done=5))
    assert c.due(0.1) == [] and c.next_due(0.1) == pytest.approx(0.15)


# ---------------------------------------------------------------- shaping


def row(**kw: Any) -> SimpleNamespace:
    return SimpleNamespace(**kw)


def test_a_sync_task_row_as_its_event() -> None:
    e = shaping.sync_task_event(
        row(id=3, template_id=7, version=2, status="syncing", progress=40, bytes_done=40,
            bytes_total=100, rate_bytes_per_sec=5, error_message=None, target_node_id=2,
            bytes_sent=30, bytes_reused=10, updated_at=T0)
    )  # fmt: skip
    assert (e.kind, e.id, e.node_id, e.version, e.bytes_sent, e.bytes_reused, e.rate_bytes_per_sec) == (
        "sync_task", 3, 2, 2, 30, 10, 5,
    )  # fmt: skip
    wire = msgspec.json.decode(encode_event(e))
    assert "counts" not in wire and wire["error_message"] is None and wire["at"].endswith("Z")
    assert decode(Event, encode_event(e).encode()) == e


def test_an_upload_streaming_has_the_bytes_received_then_its_file_once_stored() -> None:
    fields = dict(id=1, template_id=7, version=1, import_progress=0, file_size=0, received_bytes=300,
                  expected_bytes=600, error_message=None, import_node_id=1,
                  created_at=T0 - timedelta(seconds=3), updated_at=T0)  # fmt: skip
    streaming = shaping.upload_event(row(status="uploading", **fields))
    assert (streaming.bytes_done, streaming.bytes_total, streaming.progress) == (300, 600, 50)
    assert streaming.rate_bytes_per_sec == 100  # 300 bytes in the 3 s since it began
    # Chunked (no length): bytes, no percentage. All of it received: 99 % until stored.
    chunked = shaping.upload_event(row(status="uploading", **(fields | {"expected_bytes": 0})))
    assert (chunked.bytes_done, chunked.bytes_total, chunked.progress) == (300, 0, 0)
    whole = shaping.upload_event(row(status="uploading", **(fields | {"received_bytes": 600})))
    assert whole.progress == 99
    stored = shaping.upload_event(
        row(status="importing", **(fields | {"file_size": 500, "import_progress": 40}))
    )
    assert (stored.bytes_done, stored.bytes_total, stored.progress, stored.rate_bytes_per_sec) == (
        500,
        500,
        40,
        0,
    )


def group(
    status: str, n: int, progress: int = 0, done: int = 0, total: int = 0, rate: int = 0
) -> SimpleNamespace:
    return row(
        status=status,
        n=n,
        upload_id=11,
        progress=progress,
        bytes_done=done,
        bytes_total=total,
        rate=rate,
        at=T0,
    )


def test_a_version_rollout_counts_its_tasks_by_status() -> None:
    e = shaping.version_event(
        7, 2, [group("completed", 2, 200, 200, 200), group("syncing", 1, 30, 30, 100, 9)]
    )
    assert (e.kind, e.id, e.version, e.status, e.progress) == ("version", 11, 2, "syncing", 76)
    assert e.counts == {"completed": 2, "syncing": 1}
    assert (e.bytes_done, e.bytes_total, e.rate_bytes_per_sec) == (230, 300, 9)
    assert shaping.is_active(e)
    done = shaping.version_event(7, 2, [group("completed", 2), group("failed", 1)])
    assert done.status == "failed" and done.error_message == "1 of 3 sync tasks failed"
    assert not shaping.is_active(done)


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        ({"pending": 3}, "pending"),
        ({"pending": 2, "completed": 1}, "syncing"),
        ({"importing": 1}, "syncing"),
        ({"completed": 3}, "completed"),
        ({"canceled": 1}, "canceled"),
        ({"canceled": 1, "completed": 1}, "completed"),
    ],
)
def test_version_status(counts: dict[str, int], status: str) -> None:
    assert shaping.version_status(counts) == status


# ---------------------------------------------------------------- change log


def test_a_row_read_again_unchanged_is_no_event() -> None:
    log = ChangeLog()
    assert log.changed([event(done=10)]) == [event(done=10)]
    assert log.changed([event(done=10, at=T0 + timedelta(seconds=1))]) == []  # e.g. a lease renewed
    assert log.changed([event(done=20)]) == [event(done=20)]


def test_finished_objects_are_forgotten_once_out_of_reach_active_ones_after_an_hour() -> None:
    log = ChangeLog()
    log.changed([event("completed", id=1), event("syncing", id=2)])
    log.forget_before(T0 + timedelta(seconds=1))
    assert len(log) == 1
    assert log.changed([event("syncing", id=2)]) == []
    log.forget_before(T0 + timedelta(hours=2))
    assert len(log) == 0


def test_a_subscriber_that_takes_nothing_overflows_and_gets_no_more() -> None:
    async def run() -> Subscription:
        sub = Subscription(EventFilter(kinds=frozenset({"sync_task"})), asyncio.Queue(2))
        sub.push([event(kind="clone")])  # not wanted: no entry, no wake-up
        assert sub.queue.empty() and not sub.signal.is_set()
        for done in range(3):
            sub.push([event(done=done), event(kind="clone")])
        return sub

    sub = asyncio.run(run())
    assert sub.overflowed and sub.signal.is_set() and sub.queue.qsize() == 2
    assert [len(batch) for batch in (sub.queue.get_nowait(), sub.queue.get_nowait())] == [1, 1]


def test_changes_older_than_the_first_state_are_dropped_until_a_newer_one() -> None:
    fence = SnapshotFence([event(done=50, at=T0)])
    assert not fence.passes(event(done=40, at=T0 - timedelta(seconds=1)))  # read before the snapshot
    assert not fence.passes(event(done=50, at=T0))  # the same state again
    assert fence.passes(event(done=60, at=T0 + timedelta(seconds=1)))
    assert fence.passes(event(done=60, at=T0 + timedelta(seconds=1)))  # the fence is lifted
    assert fence.passes(event(id=2, at=T0 - timedelta(days=1)))  # other objects never fenced


def test_the_watermark_overlaps_and_ignores_a_clock_ahead() -> None:
    mark = Watermark(T0, overlap=timedelta(seconds=5))
    mark.saw(T0 + timedelta(seconds=2))
    assert mark.since(T0 + timedelta(seconds=10)) == T0 - timedelta(seconds=3)
    mark.saw(T0 + timedelta(hours=1))  # a replica whose clock runs an hour ahead
    assert mark.since(T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=5)


# ---------------------------------------------------------------- tickets


@pytest.fixture(scope="module")
def keys() -> tuple[TicketSigner, TicketVerifier]:
    with tempfile.TemporaryDirectory() as tmp:
        signer = TicketSigner(Path(tmp) / "ticket.key")
        signer._private()  # loaded while the file is there
        return signer, TicketVerifier(signer.public_key)


def test_an_events_ticket_names_its_token_for_30_seconds(keys: tuple[TicketSigner, TicketVerifier]) -> None:
    signer, verifier = keys
    text, expires = event_tickets.issue(signer, 42, now=1000.0)
    assert expires == 1030.0
    assert event_tickets.check(verifier, text, now=1029.0) == 42
    with pytest.raises(TicketInvalid, match="expired"):
        event_tickets.check(verifier, text, now=1031.0)


def test_a_transfer_ticket_or_a_forged_one_is_no_events_ticket(
    keys: tuple[TicketSigner, TicketVerifier],
) -> None:
    signer, verifier = keys
    transfer = transfer_ticket(signer, "n2")
    with pytest.raises(TicketInvalid, match="not an events ticket"):
        event_tickets.check(verifier, transfer, now=1000.0)
    text, _ = event_tickets.issue(signer, 42, now=1000.0)
    body, sig = text.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    with pytest.raises(TicketInvalid):
        event_tickets.check(verifier, forged, now=1000.0)
    with pytest.raises(TicketInvalid, match="malformed"):
        event_tickets.check(verifier, "nonsense", now=1000.0)

"""The pure parts of /metrics and of the log formats: bounded labels, counter steps,
which state change ends which timed job, a sync's sending node, the two line formats."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentMetrics
from coordinator.db.session import create_engine, session_factory
from coordinator.db.types import utcnow
from coordinator.metrics import CoordinatorMetrics, duration_of, sender_of
from coordinator.states.changes import StateChange
from shared.log import JsonFormatter, _TextFormatter, fields
from shared.metrics import OTHER, BoundedLabel, counter_step


def change(kind: str, old: str, new: str, since_seconds: float | None = 30.0) -> StateChange:
    since = None if since_seconds is None else utcnow() - timedelta(seconds=since_seconds)
    return StateChange(kind, 7, old, new, 3, 1, "pve1", None, since)


def test_a_label_keeps_its_first_values_and_calls_the_rest_other() -> None:
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("a", "b", "a", "c", "")] == ["a", "b", "a", OTHER, OTHER]


def test_a_reported_total_adds_its_rise_or_all_of_it_once_it_started_over() -> None:
    assert counter_step(100, 150) == 50
    assert counter_step(100, 100) == 0
    assert counter_step(100, 30) == 30  # a new receive counts from 0


def test_which_changes_end_a_timed_job() -> None:
    assert duration_of(change("upload", "uploading", "uploaded"), None, 0)[0] == "upload"  # type: ignore[index]
    assert duration_of(change("upload", "uploading", "failed"), None, 0)[0] == "upload"  # type: ignore[index]
    assert duration_of(change("upload", "importing", "imported"), 10.0, 25.0) == ("import", 15.0)
    assert duration_of(change("upload", "importing", "imported"), None, 25.0) is None  # not seen starting
    assert duration_of(change("upload", "uploaded", "importing"), None, 0) is None  # not an end
    job, seconds = duration_of(change("sync_task", "importing", "completed"), None, 0)  # type: ignore[misc]
    assert job == "sync" and 29 < seconds < 40
    assert duration_of(change("sync_task", "syncing", "pending"), None, 0) is None  # an attempt, not the task
    assert duration_of(change("sync_task", "pending", "failed", None), None, 0) is None  # never started
    assert duration_of(change("clone", "cloning", "completed"), None, 0)[0] == "clone"  # type: ignore[index]
    assert duration_of(change("deletion", "running", "done"), None, 0)[0] == "deletion"  # type: ignore[index]
    assert duration_of(change("template", "active", "deleting"), None, 0) is None


def test_the_node_that_streams_to_a_target_is_the_last_of_its_chain() -> None:
    assert sender_of("pve1", "") == "pve1"
    assert sender_of("pve1", "pve1,pve2") == "pve2"


def test_two_apps_in_one_process_keep_their_own_counts() -> None:
    first, second = CoordinatorMetrics(15.0), CoordinatorMetrics(15.0)
    first.copied("pve1", "pve2", 10)
    first.observe_change(change("upload", "uploaded", "importing"))
    first.observe_change(change("upload", "importing", "imported"))
    agent = AgentMetrics()
    agent.received_from(None, 5)
    scraped = {
        name: {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
        for name, m in (("first", first), ("second", second), ("agent", agent))
    }
    sent = scraped["first"]["pvesphere_sync_sent_bytes"].samples
    assert [(s.name, s.labels, s.value) for s in sent if s.name.endswith("_total")] == [
        ("pvesphere_sync_sent_bytes_total", {"node": "pve1"}, 10.0)
    ]
    assert not [
        s for s in scraped["second"]["pvesphere_sync_sent_bytes"].samples if s.name.endswith("_total")
    ]
    imports = scraped["first"]["pvesphere_import_duration_seconds"].samples
    assert [s.value for s in imports if s.name.endswith("_count")] == [1.0]
    received = scraped["agent"]["pvesphere_agent_received_bytes"].samples
    assert [(s.labels, s.value) for s in received if s.name.endswith("_total")] == [
        ({"peer": "unknown"}, 5.0)
    ]


def record(text: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("coordinator.states", logging.INFO, __file__, 1, text, (), None)
    for key, value in fields(**extra).items():
        setattr(rec, key, value)
    return rec


def test_a_json_line_holds_the_message_and_its_fields() -> None:
    line = JsonFormatter("coordinator").format(record("upload 7: a -> b", id=7, node="pve 1", error=None))
    parsed = json.loads(line)
    assert parsed.pop("ts").endswith("Z")
    assert parsed == {
        "level": "info",
        "logger": "coordinator.states",
        "msg": "upload 7: a -> b",
        "service": "coordinator",
        "id": 7,
        "node": "pve 1",
    }
    # A field never hides the line's own keys.
    assert json.loads(JsonFormatter().format(record("m", msg="other")))["msg"] == "m"


def test_a_text_line_carries_its_fields_after_the_message() -> None:
    text = _TextFormatter("%(levelname)s %(message)s").format(record("upload 7", id=7, node="pve 1", to="b"))
    assert text == 'INFO upload 7 id=7 node="pve 1" to=b'


def test_counts_follow_the_changes_this_process_commits_between_reads() -> None:
    metrics = CoordinatorMetrics(15.0)
    metrics.figures.tasks |= {("upload", "importing"): 1, ("upload", "imported"): 4}
    metrics.figures.tasks |= {("sync_task", "syncing"): 1, ("sync_task", "completed"): 0}
    metrics.observe_change(change("upload", "importing", "imported"))
    metrics.observe_change(change("sync_task", "syncing", "importing"))  # read afresh anyway
    assert metrics.figures.tasks == {
        ("upload", "importing"): 0,
        ("upload", "imported"): 5,
        ("sync_task", "syncing"): 1,
        ("sync_task", "completed"): 0,
    }


async def test_a_scrape_answers_while_the_database_does_not() -> None:
    engine = create_engine("mysql+asyncmy://u:p@127.0.0.1:1/none")  # nothing listens on port 1
    metrics = CoordinatorMetrics(15.0)
    metrics.attach(engine, session_factory(engine))
    try:
        await metrics.refresh()
    finally:
        await engine.dispose()
    assert metrics.registry.get_sample_value("pvesphere_database_up") == 0
    assert (metrics.registry.get_sample_value("process_resident_memory_bytes") or 0) > 0

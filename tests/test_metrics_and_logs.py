"""GET /metrics on the coordinator and on an agent, and the JSON log lines of state
changes (issue 15 items 2 and 5), over real HTTP against one stack run with
``log_format = "json"``: an upload imported on pve-node1 and synced to pve-node2, then
what Prometheus and a log shipper would see of it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from demo.stack import Stack
from tests.conftest import own_stack
from tests.support.api import Api
from tests.support.images import raw_with_data
from tests.support.syncs import wait_task
from tests.support.uploads import node_ids, storage_id, upload, wait_for, wait_import

Families = dict[str, Metric]


@pytest.fixture(scope="module")
def json_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    logs = {"log_format": "json"}
    return own_stack(
        request, tmp_path_factory, "metrics", "sqlite", coordinator_settings=logs, agent_settings=logs
    )


@pytest.fixture(scope="module")
def synced(json_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An upload on pve-node1 with a sync to pve-node2, then a clone of it on pve-node2, all
    done: the upload's answer, the finished sync task and clone as the API shows them."""
    stack = json_stack
    api = Api(stack.api, stack.admin_token)
    image = raw_with_data(tmp_path_factory.mktemp("metrics") / "m.raw", 16, 4)
    target = node_ids(api, stack)["pve-node2"]
    data = upload(
        api,
        stack,
        image,
        f"metrics-{secrets.token_hex(3)}",
        storage_id(api, stack, "local", "pve-node1"),
        sync_node_ids=str(target),
    ).ok()
    image.unlink()
    assert wait_import(api, data["template_id"])["upload_info"]["status"] == "imported"
    task = wait_task(api, data["sync_tasks"][0]["task_id"], lambda t: t["status"] in ("completed", "failed"))
    assert task["status"] == "completed", task
    body = {"node_id": target, "name": f"m-{secrets.token_hex(3)}"}
    clone_id = api.post(f"/templates/{data['template_id']}/clone", json=body).ok()["clone_id"]
    clone = wait_for(
        lambda: (c := api.get(f"/clones/{clone_id}").ok())["status"] in ("completed", "failed") and c,
        60,
        f"clone {clone_id} ended",
    )
    assert clone["status"] == "completed", clone
    return {"upload": data, "task": task, "clone": clone}


def scrape(url: str, stack: Stack) -> Families:
    reply = requests.get(url, timeout=10, verify=str(stack.ca_file))  # no token, no credential
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(reply.text)}


def value(families: Families, sample: str, **labels: str) -> float | None:
    for family in families.values():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_metrics_need_no_token_while_the_api_and_agent_orders_do(json_stack: Stack) -> None:
    stack = json_stack
    assert requests.get(stack.coordinator_url + "/metrics", timeout=10).status_code == 200
    assert requests.get(stack.api + "/templates", timeout=10).status_code == 401
    agent = stack.agent_url("pve-node1")
    assert requests.get(agent + "/metrics", timeout=10, verify=str(stack.ca_file)).status_code == 200
    assert requests.get(agent + "/v1/staging", timeout=10, verify=str(stack.ca_file)).status_code == 401


def test_coordinator_metrics_after_an_upload_and_a_sync(json_stack: Stack, synced: dict[str, Any]) -> None:
    stack, task = json_stack, synced["task"]
    url = stack.coordinator_url + "/metrics"

    def done() -> Families | None:
        families = scrape(url, stack)
        counts_current = (value(families, "pvesphere_tasks", kind="sync_task", status="completed") or 0) >= 1
        return families if counts_current else None

    families = wait_for(done, 10, "counts read again (cached for 5 s)")
    assert families["pvesphere_tasks"].type == "gauge"
    assert value(families, "pvesphere_database_up") == 1
    assert value(families, "pvesphere_tasks", kind="upload", status="imported") == 1
    assert value(families, "pvesphere_tasks", kind="sync_task", status="pending") in (None, 0)
    # Durations: one upload, its import and the sync, each observed once with how it ended.
    assert value(families, "pvesphere_tasks", kind="clone", status="completed") == 1
    jobs = (("upload", "uploaded"), ("import", "imported"), ("sync", "completed"), ("clone", "completed"))
    for job, result in jobs:
        family = families[f"pvesphere_{job}_duration_seconds"]
        assert family.type == "histogram" and family.unit in ("", "seconds")
        assert value(families, f"pvesphere_{job}_duration_seconds_count", result=result) == 1, job
        seconds = value(families, f"pvesphere_{job}_duration_seconds_sum", result=result)
        assert seconds is not None and 0 < seconds < 120, (job, seconds)
    # Bytes per node: what the target received over the network, as the task reports it.
    assert task["bytes_sent"] > 0
    assert families["pvesphere_sync_sent_bytes"].type == "counter"
    assert value(families, "pvesphere_sync_sent_bytes_total", node="pve-node1") == task["bytes_sent"]
    assert value(families, "pvesphere_sync_received_bytes_total", node="pve-node2") == task["bytes_sent"]
    for node in stack.node_names():
        assert value(families, "pvesphere_agent_up", cluster=stack.s.cluster_name, node=node) == 1, node
        age = value(families, "pvesphere_agent_heartbeat_age_seconds", node=node)
        assert age is not None and 0 <= age < 30
    pool_size = value(families, "pvesphere_db_pool_size")
    checked_out = value(families, "pvesphere_db_pool_checked_out")
    assert pool_size and pool_size >= 1 and checked_out is not None and 0 <= checked_out <= pool_size + 10
    # Routes by pattern, never with ids; the upload answered 2xx.
    assert value(families, "pvesphere_http_requests_total", route="/api/v1/templates/upload", status="2xx")
    routes = {s.labels["route"] for s in families["pvesphere_http_requests"].samples}
    assert "/api/v1/templates/sync-tasks/{task_id}" in routes, routes
    assert not any(str(task["task_id"]) in r.split("/") for r in routes), routes
    assert value(families, "pvesphere_build_info", service="coordinator")
    assert (value(families, "process_resident_memory_bytes") or 0) > 0


def test_agent_metrics_count_the_copy_and_the_jobs(json_stack: Stack, synced: dict[str, Any]) -> None:
    stack, task = json_stack, synced["task"]
    source = scrape(stack.agent_url("pve-node1") + "/metrics", stack)
    target = scrape(stack.agent_url("pve-node2") + "/metrics", stack)
    assert source["pvesphere_agent_sent_bytes"].type == "counter"
    assert value(source, "pvesphere_agent_sent_bytes_total", peer="pve-node2") == task["bytes_sent"]
    assert value(target, "pvesphere_agent_received_bytes_total", peer="pve-node1") == task["bytes_sent"]
    assert value(target, "pvesphere_agent_sent_bytes_total") is None  # it sent nothing
    assert value(target, "pvesphere_agent_jobs_finished_total", job="clone", result="done") == 1
    assert value(source, "pvesphere_agent_jobs_finished_total", job="clone", result="done") is None
    # The upload's import on pve-node1, the sync's on pve-node2.
    for families in (source, target):
        assert value(families, "pvesphere_agent_jobs_finished_total", job="import", result="done") == 1
        assert value(families, "pvesphere_agent_jobs_running", job="import") == 0
        assert (value(families, "pvesphere_agent_staging_used_bytes") or 0) > 0
        assert (value(families, "pvesphere_agent_staging_free_bytes") or 0) > 0
        assert value(families, "pvesphere_build_info", service="agent")
        # Named and typed though nothing was refused.
        assert families["pvesphere_agent_chunks_rejected"].type == "counter"
        assert families["pvesphere_agent_corrupt_reused_chunks"].type == "counter"
        assert value(families, "pvesphere_agent_corrupt_reused_chunks_total") == 0


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    parsed = [json.loads(line) for line in lines]  # every line: a shipper never parses prose
    for line in parsed:
        assert {"ts", "level", "logger", "msg"} <= line.keys(), line
    return parsed


def test_json_logs_name_every_state_change_of_the_upload_and_its_sync(
    json_stack: Stack, synced: dict[str, Any]
) -> None:
    upload_id = synced["upload"]["upload_id"]
    template_id = synced["upload"]["template_id"]
    task = synced["task"]
    lines = json_lines(json_stack.base / "logs" / "coordinator.log")

    def changes(entity: str, entity_id: int) -> list[dict[str, Any]]:
        return [line for line in lines if line.get("entity") == entity and line.get("id") == entity_id]

    upload_changes = changes("upload", upload_id)
    assert [(c["from"], c["to"]) for c in upload_changes] == [
        ("uploading", "uploaded"),
        ("uploaded", "importing"),
        ("importing", "imported"),
    ]
    for change in upload_changes:
        assert (change["template_id"], change["version"], change["node"]) == (template_id, 1, "pve-node1")
        assert change["logger"] == "coordinator.states" and change["level"] == "info"
    sync_changes = changes("sync_task", task["task_id"])
    assert [(c["from"], c["to"]) for c in sync_changes] == [
        ("pending", "syncing"),
        ("syncing", "importing"),
        ("importing", "completed"),
    ]
    assert {(c["template_id"], c["node"]) for c in sync_changes} == {(template_id, "pve-node2")}
    assert sync_changes[-1]["msg"] == f"sync_task {task['task_id']}: importing -> completed"
    clone_changes = changes("clone", synced["clone"]["clone_id"])
    assert clone_changes[0]["from"] == "pending" and clone_changes[-1]["to"] == "completed", clone_changes
    assert {(c["template_id"], c["version"], c["node"]) for c in clone_changes} == {
        (template_id, 1, "pve-node2")
    }
    json_lines(json_stack.base / "logs" / "agent-pve-node1.log")

"""A cluster is upgraded node by node: an agent one minor version apart from the coordinator
registers and beats as usual; one further apart, or of another major version, is refused at
registration (and at its heartbeats) with a message naming both versions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from coordinator.agents import enrolment
from coordinator.appkeys import DB
from coordinator.db.models import Agent
from coordinator.db.types import utcnow
from shared.version import VERSION, major_minor, minor_skew
from tests.support.api import Api
from tests.support.inprocess import InProcess

NODE = "pve-node3"


@pytest.fixture
def node3(coordinator: InProcess) -> Iterator[Api]:
    """The coordinator's agent API with pve-node3's credential (enrolled as its agent would)."""

    async def join_token() -> str:
        async with coordinator.app[DB]() as session:
            return (await enrolment.issue_join_token(session, NODE, timedelta(minutes=5))).secret

    token = coordinator.run(join_token())
    enrolled = Api(coordinator.url + "/agent-api/v1", token).post("/enroll", json={"node_name": NODE}).ok()
    yield Api(coordinator.url + "/agent-api/v1", enrolled["credential"])

    async def gone() -> None:
        """No live agent stays behind at its made-up address: the session-long coordinator's
        other tests would send pve-node3's work there (a resumable upload's creation did)."""
        async with coordinator.app[DB]() as session:
            await session.execute(
                update(Agent)
                .where(Agent.node_name == NODE, Agent.stopped_at.is_(None))
                .values(stopped_at=utcnow())
            )
            await session.commit()

    coordinator.run(gone())


def _hello(version: str) -> dict[str, object]:
    return {
        "node_name": NODE,
        "cluster_name": "pve-inprocess",
        "url": "https://pve-node3.invalid:8443",
        "version": version,
        "started_at": "2026-01-01T00:00:00Z",
        "pve_ok": True,
        "staging_free_bytes": 1,
    }


def _ours() -> tuple[int, int]:
    parsed = major_minor(VERSION)
    assert parsed is not None, VERSION
    return parsed


def test_an_agent_one_minor_version_ahead_or_behind_registers_and_beats(node3: Api) -> None:
    """(Before 1.0 the minor versions must match: then only other patch levels.)"""
    major, minor = _ours()
    skew = minor_skew(major)
    for version in {f"{major}.{minor + skew}.0", f"{major}.{max(minor - skew, 0)}.7", VERSION}:
        registered = node3.post("/register", json=_hello(version)).ok()
        assert registered["coordinator_version"] == VERSION
        beat = node3.post(f"/agents/{registered['agent_id']}/heartbeat", json=_hello(version))
        assert beat.ok()["agent_id"] == registered["agent_id"]


def test_an_agent_newer_by_a_field_is_understood(node3: Api) -> None:
    """What a newer agent reports besides the fields this coordinator knows is ignored."""
    major, minor = _ours()
    hello = {**_hello(f"{major}.{minor + minor_skew(major)}.0"), "gpu_count": 2, "pve": {"nested": True}}
    assert node3.post("/register", json=hello).ok()["agent_id"] > 0


@pytest.mark.parametrize("distance", ["minor+skew+1", "major+1", "not a version"])
def test_an_agent_too_far_apart_is_refused_naming_both_versions(node3: Api, distance: str) -> None:
    major, minor = _ours()
    version = {
        "minor+skew+1": f"{major}.{minor + minor_skew(major) + 1}.0",
        "major+1": f"{major + 1}.{minor}.0",
        "not a version": "latest",
    }[distance]
    refused = node3.post("/register", json=_hello(version))
    assert (refused.status, refused.error) == (409, "incompatible_version"), refused.body
    assert version in refused.message and VERSION in refused.message, refused.message
    assert NODE in refused.message

    registered = node3.post("/register", json=_hello(VERSION)).ok()
    beat = node3.post(f"/agents/{registered['agent_id']}/heartbeat", json=_hello(version))
    assert (beat.status, beat.error) == (409, "incompatible_version"), beat.body

"""An agent downloading an image from a URL into staging (agent/downloader.py), over real HTTPS
from a local image server with its own test CA: staged and checked; resumed with a Range
request after a broken or stalled connection (the staged file byte-identical); started over
when the server ignores Range; a wrong checksum, a URL or a redirect to a host not allowed,
and a file too large refused, each leaving staging empty."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.appkeys import DOWNLOADER
from agent.download_policy import HostAllowlist
from agent.downloader import Downloader, DownloadOp, DownloadSettings
from agent.eviction import Evictor
from agent.routes import downloads
from agent.staging import Staging
from agent.staging_budget import Budget
from agent.transfer.manifests import StagedManifests
from shared.messages.downloads import DownloadRequest
from shared.tls import download_context
from tests.support import images
from tests.support.image_server import ETAG, Behaviour, ImageServer

MAX_BYTES = 64 << 20
MAX_VIRTUAL = 1 << 30


async def _no_eviction(_name: str) -> tuple[bool, str]:
    return False, "no eviction in this test"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return images.qcow2(tmp_path / "cloud.qcow2", size_mib=16, data_mib=3, seed=11)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-server")


@pytest.fixture
async def server(ca_dir: Path) -> AsyncIterator[ImageServer]:
    s = ImageServer(ca_dir)
    await s.start()
    yield s
    await s.stop()


class Agent:
    def __init__(
        self, root: Path, server: ImageServer, hosts: str = "127.0.0.1", stall: float = 60.0
    ) -> None:
        self.staging = Staging(root / "staging")
        self.manifests = manifests = StagedManifests(self.staging)
        evictor = Evictor(self.staging, Budget(share=1.0), _no_eviction, set, lambda _n: None)
        settings = DownloadSettings(
            HostAllowlist.parse(hosts),
            download_context(server.ca_file, "download_cacert"),
            timeout=60.0,
            seconds_per_gib=0.0,
            stall_timeout=stall,
        )
        self.downloader = Downloader(self.staging, manifests, evictor, settings)

    async def download(self, url: str, **kw: Any) -> DownloadOp:
        fields: dict[str, Any] = {
            "upload_id": 7,
            "url": url,
            "format": "qcow2",
            "max_bytes": MAX_BYTES,
            "max_virtual_size": MAX_VIRTUAL,
        }
        fields.update(kw)
        op = self.downloader.start(DownloadRequest(**fields))
        assert op.task is not None
        await op.task
        return op

    def files(self) -> list[str]:
        return sorted(p.name for p in self.staging.root.iterdir() if p.is_file())

    async def close(self) -> None:
        """Stop what a staged image started (its chunk manifest's build), as the agent does."""
        await self.manifests.close()


@pytest.fixture
async def agent(tmp_path: Path, server: ImageServer) -> AsyncIterator[Agent]:
    a = Agent(tmp_path / "agent", server)
    yield a
    await a.close()


def _staged_bytes(agent: Agent, op: DownloadOp) -> bytes:
    assert op.state == "done", op.view()
    assert op.staged is not None
    return agent.staging.path(op.staged.staged_name).read_bytes()


async def test_a_download_is_staged_with_its_sha256(agent: Agent, server: ImageServer, image: Path) -> None:
    sha = server.add("cloud.qcow2", image)
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha)
    assert _staged_bytes(agent, op) == image.read_bytes()
    assert op.staged is not None and op.staged.sha256 == sha and op.staged.format == "qcow2"
    assert agent.files() == [op.staged.staged_name]
    assert (op.received, op.expected, op.attempts) == (len(image.read_bytes()),) * 2 + (1,)


async def test_a_sha512_is_checked_when_that_is_what_was_given(
    agent: Agent, server: ImageServer, image: Path
) -> None:
    server.add("cloud.qcow2", image)
    sha512 = hashlib.sha512(image.read_bytes()).hexdigest()
    op = await agent.download(f"{server.url}/cloud.qcow2", sha512=sha512)
    assert _staged_bytes(agent, op) == image.read_bytes()


async def test_a_broken_connection_is_resumed_with_a_range_request(
    agent: Agent, server: ImageServer, image: Path
) -> None:
    sha = server.add("cloud.qcow2", image)
    server.behaviour = Behaviour(break_after=1 << 20)
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha)
    assert _staged_bytes(agent, op) == image.read_bytes()
    assert [(s.range, s.if_range) for s in server.seen] == [(None, None), (f"bytes={1 << 20}-", ETAG)]
    assert op.attempts == 2


async def test_a_stalled_body_is_resumed(tmp_path: Path, server: ImageServer, image: Path) -> None:
    agent = Agent(tmp_path / "agent", server, stall=1.0)
    sha = server.add("cloud.qcow2", image)
    server.behaviour = Behaviour(break_after=1 << 20, stall=True)
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha)
    await agent.close()
    assert _staged_bytes(agent, op) == image.read_bytes()
    assert [s.range for s in server.seen] == [None, f"bytes={1 << 20}-"]


async def test_a_server_ignoring_range_is_started_over(
    agent: Agent, server: ImageServer, image: Path
) -> None:
    sha = server.add("cloud.qcow2", image)
    server.behaviour = Behaviour(break_after=1 << 20, ignore_range=True)
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha)
    assert _staged_bytes(agent, op) == image.read_bytes()
    assert op.staged is not None and op.staged.sha256 == sha
    assert len(server.seen) == 2 and server.seen[1].range == f"bytes={1 << 20}-"


async def test_a_checksum_mismatch_is_a_422_naming_both_and_leaves_staging_empty(
    agent: Agent, server: ImageServer, image: Path
) -> None:
    sha = server.add("cloud.qcow2", image)
    wrong = "0" * 64
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=wrong)
    assert (op.state, op.status, op.slug) == ("failed", 422, "checksum_mismatch")
    assert op.error is not None and wrong in op.error and sha in op.error
    assert agent.files() == []


async def test_a_content_length_over_the_limit_is_a_413_before_reading(
    agent: Agent, server: ImageServer, image: Path
) -> None:
    sha = server.add("cloud.qcow2", image)
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha, max_bytes=1 << 20)
    assert (op.state, op.status, op.slug) == ("failed", 413, "too_large")
    assert op.received == 0
    assert agent.files() == []


async def test_a_body_growing_past_the_limit_is_a_413(agent: Agent, server: ImageServer, image: Path) -> None:
    sha = server.add("cloud.qcow2", image)
    server.behaviour = Behaviour(chunked=True)  # no Content-Length to refuse it by
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha, max_bytes=1 << 20)
    assert (op.state, op.status, op.slug) == ("failed", 413, "too_large")
    assert op.error is not None and "grew past the limit" in op.error
    assert agent.files() == []


async def test_a_download_of_unknown_length_is_staged(agent: Agent, server: ImageServer, image: Path) -> None:
    sha = server.add("cloud.qcow2", image)
    server.behaviour = Behaviour(chunked=True)
    op = await agent.download(f"{server.url}/cloud.qcow2", sha256=sha)
    assert _staged_bytes(agent, op) == image.read_bytes()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:{port}/cloud.qcow2", "https://"),
        ("https://localhost:{port}/cloud.qcow2", "'localhost' is not in this agent's download_hosts"),
        ("https://evil.example.org/cloud.qcow2", "'evil.example.org' is not in this agent's download_hosts"),
        ("https://user:pw@127.0.0.1:{port}/cloud.qcow2", "user name or password"),
    ],
)
async def test_a_url_not_allowed_is_a_400_before_any_connection(
    aiohttp_client: Any, agent: Agent, server: ImageServer, image: Path, url: str, named: str
) -> None:
    sha = server.add("cloud.qcow2", image)
    app = web.Application()
    app[DOWNLOADER] = agent.downloader
    app.router.add_post("/v1/downloads", downloads.start_download)
    client = await aiohttp_client(app)
    body = {
        "upload_id": 7,
        "url": url.format(port=server.port),
        "sha256": sha,
        "format": "qcow2",
        "max_bytes": MAX_BYTES,
        "max_virtual_size": MAX_VIRTUAL,
    }
    resp = await client.post("/v1/downloads", json=body)
    assert resp.status == 400
    assert named in (await resp.json())["message"]
    assert server.seen == [] and agent.downloader.ops == {}


async def test_a_redirect_to_a_host_not_allowed_is_a_400(
    agent: Agent, server: ImageServer, image: Path
) -> None:
    sha = server.add("cloud.qcow2", image)
    server.redirects["latest.qcow2"] = f"https://localhost:{server.port}/cloud.qcow2"
    op = await agent.download(f"{server.url}/latest.qcow2", sha256=sha)
    assert (op.state, op.status) == ("failed", 400)
    assert op.error is not None and "'localhost' is not in this agent's download_hosts" in op.error
    assert [s.path for s in server.seen] == ["latest.qcow2"]
    assert agent.files() == []


async def test_a_redirect_to_an_allowed_host_is_followed(
    tmp_path: Path, server: ImageServer, image: Path
) -> None:
    agent = Agent(tmp_path / "agent", server, hosts="127.0.0.1, localhost")
    sha = server.add("cloud.qcow2", image)
    server.redirects["latest.qcow2"] = f"https://localhost:{server.port}/cloud.qcow2"
    op = await agent.download(f"{server.url}/latest.qcow2", sha256=sha)
    await agent.close()
    assert _staged_bytes(agent, op) == image.read_bytes()


async def test_a_missing_file_is_a_400_naming_the_servers_answer(agent: Agent, server: ImageServer) -> None:
    op = await agent.download(f"{server.url}/nothing.qcow2", sha256="a" * 64)
    assert (op.state, op.status) == ("failed", 400)
    assert op.error is not None and "answered 404" in op.error
    assert agent.files() == []


async def test_an_image_that_is_not_what_it_claims_is_rejected_and_removed(
    agent: Agent, server: ImageServer, tmp_path: Path
) -> None:
    fake = tmp_path / "fake.qcow2"
    fake.write_bytes(b"not a disk image" * 1000)
    sha = server.add("fake.qcow2", fake)
    op = await agent.download(f"{server.url}/fake.qcow2", sha256=sha)
    assert (op.state, op.slug) == ("failed", "image_rejected")
    assert agent.files() == []

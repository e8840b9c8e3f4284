"""The agent's HTTP server.

Orders (uploads, exports, imports, clones, staging, VMs, transfers, receive state) are taken only from a
caller presenting this node's own credential: the coordinator. Peers present nothing but
a ticket the coordinator signed (and the session it opened); /health is for anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from agent import shutdown
from agent.appkeys import (
    CLONER,
    CONFIG,
    CREDENTIAL,
    DOWNLOADER,
    EVICTOR,
    EXPORTER,
    IMPORTER,
    LINK,
    MANIFESTS,
    METRICS,
    PLAIN_DATA,
    PVE,
    RECEIVES,
    RESUMABLE,
    SENDER,
    STAGING,
    STARTED_AT,
    STARTED_WALL,
    TRANSFER_POLICY,
    VM_JOURNAL,
)
from agent.cloner import Cloner
from agent.config import AgentConfig
from agent.coordinator_link import CoordinatorLink
from agent.download_policy import HostAllowlist
from agent.downloader import Downloader, DownloadSettings
from agent.eviction import Evictor
from agent.exporter import Exporter
from agent.importer import Importer
from agent.metrics import AgentMetrics, Job
from agent.pve import NodePve
from agent.resumable import ResumableFiles
from agent.routes import clones, downloads, exports, health, imports, resumable, staging, uploads, vms
from agent.routes.responses import json_error
from agent.staging import Staging
from agent.transfer import routes as transfer_routes
from agent.transfer.guest_image import GuestViewFailed
from agent.transfer.imported_seeds import ImportedSeeds
from agent.transfer.manifests import StagedManifests
from agent.transfer.plain_data import PlainData
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import SPACE_RESERVE, Receives
from agent.transfer.seed_source import resolve_seed
from agent.transfer.seeds import Seeds
from agent.transfer.send import RateLimit, Sender
from agent.vm_journal import VmJournal
from shared import server_header
from shared.error_slugs import ErrorSlug
from shared.metrics import metrics_handler
from shared.tls import download_context
from shared.wire_codec import CODECS

log = logging.getLogger(__name__)
# Routes (by name) that take no credential: health, and what peers call with a ticket.
OPEN_ROUTES = {"health", "metrics", *transfer_routes.PEER_ROUTES}


@web.middleware
async def require_credential(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.match_info.route.name not in OPEN_ROUTES:
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        expected = request.app[CREDENTIAL].encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(secret.strip().encode(), expected):
            return json_error(401, ErrorSlug.UNAUTHORIZED, "this endpoint needs this node's agent credential")
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return json_error(404, ErrorSlug.ROUTE_NOT_FOUND, f"no route {request.method} {request.path}")


async def _background(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    link = app[LINK]
    tasks = [
        asyncio.create_task(link.run(), name="coordinator-link"),
        asyncio.create_task(app[EVICTOR].sweep_forever(), name="staging-sweep"),
    ]
    announcer = None
    if config.mdns:
        from agent.discovery import Announcer  # zeroconf costs ~4 MiB: only when announcing

        status = await app[PVE].status()
        announcer = Announcer(config.node_name, status.cluster_name, config.url)
        await announcer.start()
    log.info("agent for node %s serving on %s", config.node_name, config.url)
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[SENDER].close()
    await app[MANIFESTS].close()
    await app[RECEIVES].seeds.close()
    await app[PLAIN_DATA].close()
    if announcer is not None:
        await announcer.stop()
    await link.goodbye()
    log.info("stopped")


async def room_in_staging(app: web.Application, need: int, purpose: str) -> None:
    """Room for ``need`` bytes in staging (copies evicted where they may go), or GuestViewFailed."""
    await app[EVICTOR].make_room(need, SPACE_RESERVE, purpose)
    free = app[STAGING].free_bytes()
    if need + SPACE_RESERVE > free:
        raise GuestViewFailed(f"no room in staging for {purpose}: {need} bytes wanted, {free} free")


def _watch(app: web.Application, metrics: AgentMetrics) -> None:
    """The agent's metrics read at scrape time, and its jobs' ends counted."""
    app[IMPORTER].ended = metrics.job_ended("import")
    app[CLONER].ended = metrics.job_ended("clone")
    app[EXPORTER].ended = metrics.job_ended("export")
    running: dict[Job, Callable[[], int]] = {
        "import": lambda: len(app[IMPORTER].running()),
        "clone": lambda: len(app[CLONER].running()),
        "export": lambda: sum(1 for op in app[EXPORTER].ops.values() if op.state == "running"),
    }
    metrics.watch(running, app[STAGING].used_bytes, app[STAGING].free_bytes)


def create_app(config: AgentConfig, credential: str, peer_tls: ssl.SSLContext) -> web.Application:
    """The agent of ``config.node_name``, which takes orders only with ``credential`` and
    checks the certificates of the peers it sends to with ``peer_tls``."""
    app = web.Application(middlewares=[require_credential])
    server_header.name_server(app, server_header.AGENT)
    app[CONFIG] = config
    app[CREDENTIAL] = credential
    app[PVE] = NodePve(config)
    app[STAGING] = Staging(config.staging_dir)
    for leftover in app[STAGING].remove_partials():
        log.info("removed partial upload %s left by an earlier run", leftover)
    app[RESUMABLE] = ResumableFiles(app[STAGING])  # (their partial files stay: they resume)
    app[VM_JOURNAL] = VmJournal(config.vm_journal_file)
    imported: list[ImportedSeeds] = []  # (made below: it needs the receives)
    app[IMPORTER] = Importer(
        app[PVE],
        app[STAGING],
        app[VM_JOURNAL],
        config.import_timeout,
        config.import_seconds_per_gib,
        lambda name, vmid, volume: imported[0].landed(name, vmid, volume),
    )
    app[CLONER] = Cloner(app[PVE], app[VM_JOURNAL], config.import_timeout, config.import_seconds_per_gib)
    app[METRICS] = metrics = AgentMetrics()
    app[TRANSFER_POLICY] = PeerPolicy()
    app[LINK] = CoordinatorLink(config, app[PVE], credential, app[TRANSFER_POLICY])
    app[SENDER] = Sender(
        app[LINK].fresh_ticket,
        RateLimit(config.max_send_rate),
        peer_tls,
        app[TRANSFER_POLICY],
        codecs=CODECS if config.wire_compression else (),
        node=config.node_name,
        metrics=metrics,
    )
    pve = app[PVE]
    seeds = Seeds(config.staging_dir / "receives" / "seeds", lambda seed: resolve_seed(pve, seed))
    app[RECEIVES] = Receives(app[STAGING], config.node_name, app[TRANSFER_POLICY], app[SENDER], seeds)
    app[EVICTOR] = Evictor(
        app[STAGING],
        config.budget,
        app[LINK].release_staged,
        lambda: app[SENDER].reading() | app[IMPORTER].using(),
        app[RECEIVES].forget_copy,
    )
    app[MANIFESTS] = StagedManifests(app[STAGING], lambda need, purpose: room_in_staging(app, need, purpose))
    imported.append(ImportedSeeds(pve, seeds, app[RECEIVES], app[MANIFESTS]))
    app.on_cleanup.append(lambda _app: imported[0].close())
    app[EXPORTER] = Exporter(
        app[PVE], app[STAGING], app[EVICTOR], config.import_timeout, config.import_seconds_per_gib
    )
    app[DOWNLOADER] = Downloader(
        app[STAGING],
        app[MANIFESTS],
        app[EVICTOR],
        DownloadSettings(
            HostAllowlist.parse(config.download_hosts),
            download_context(config.download_cacert, "download_cacert"),
            config.import_timeout,
            config.import_seconds_per_gib,
        ),
    )
    advertised = urlsplit(config.url).hostname or config.host
    app[PLAIN_DATA] = PlainData(transfer_routes.plain_data_app(app[RECEIVES]), config.host, advertised)
    app[STARTED_AT] = time.monotonic()
    app[STARTED_WALL] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _watch(app, metrics)
    app.router.add_get("/health", health.health, name="health")
    app.router.add_get("/metrics", metrics_handler(metrics.registry), name="metrics")
    app.router.add_get("/v1/whoami", health.whoami)
    app.router.add_put("/v1/uploads/{upload_id:[0-9]+}", uploads.receive_upload)
    app.router.add_get("/v1/staging", staging.list_staging)
    app.router.add_put("/v1/resumable/{upload_id:[0-9]+}", resumable.create_resumable)
    app.router.add_get("/v1/resumable/{upload_id:[0-9]+}", resumable.resumable_offset)
    app.router.add_patch("/v1/resumable/{upload_id:[0-9]+}", resumable.patch_resumable)
    app.router.add_delete("/v1/uploads/{upload_id:[0-9]+}", uploads.delete_upload)
    app.router.add_delete("/v1/staging/{name}", uploads.delete_staged)
    app.router.add_post("/v1/imports", imports.start_import)
    app.router.add_get("/v1/imports/{key}", imports.get_import)
    app.router.add_post("/v1/imports/{key}/cancel", imports.cancel_import)
    app.router.add_post("/v1/exports/check", exports.check_export)
    app.router.add_post("/v1/exports", exports.start_export)
    app.router.add_get("/v1/exports/{upload_id:[0-9]+}", exports.get_export)
    app.router.add_post("/v1/exports/{upload_id:[0-9]+}/cancel", exports.cancel_export)
    app.router.add_post("/v1/downloads", downloads.start_download)
    app.router.add_get("/v1/downloads/{upload_id:[0-9]+}", downloads.get_download)
    app.router.add_post("/v1/downloads/{upload_id:[0-9]+}/cancel", downloads.cancel_download)
    app.router.add_post("/v1/clones", clones.start_clone)
    app.router.add_get("/v1/clones/{key}", clones.get_clone)
    app.router.add_post("/v1/clones/{key}/cancel", clones.cancel_clone)
    app.router.add_get("/v1/vms", vms.list_vms)
    app.router.add_get("/v1/vms/{vmid:[0-9]+}", vms.get_vm)
    app.router.add_delete("/v1/vms/{vmid:[0-9]+}", vms.delete_vm)
    transfer_routes.add_routes(app)
    app.on_shutdown.append(shutdown.on_shutdown)
    app.cleanup_ctx.append(_background)
    return app

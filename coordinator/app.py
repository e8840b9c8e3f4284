"""Wiring: the aiohttp application, its middlewares, background work and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator import shared_limits, uploads
from coordinator.agents.credentials import Credentials
from coordinator.agents.links import AgentLinks
from coordinator.api import (
    agent_api,
    agents,
    clones,
    clusters,
    events,
    from_url,
    from_vm,
    from_volume,
    health,
    nodes,
    openapi,
    storages,
    sync_tasks,
    templates,
    tus,
    upload,
    versions,
)
from coordinator.api.errors import ApiError, error_response, from_refusal, retry_after_header
from coordinator.api.routing import AGENT_API_PREFIX, API_PREFIX, mount
from coordinator.api.token_cache import TokenCache
from coordinator.appkeys import (
    AGENT_TLS,
    AGENTS,
    CLONES,
    CONFIG,
    CREDENTIALS,
    DB,
    DELETE_JOBS,
    DELETES,
    ENGINE,
    EVENTS,
    IMPORTS,
    INVENTORY,
    METRICS,
    READS,
    STARTED_AT,
    SYNC_WATCHERS,
    SYNCS,
    TICKET_VERIFIER,
    TICKETS,
    TOKEN_CACHE,
    UPLOAD_PACER,
    UPLOAD_SLOTS,
    VERSIONS,
)
from coordinator.config import CoordinatorConfig
from coordinator.db.fast_reads import open_reads
from coordinator.db.migrate import SCHEMA_HEAD, current_revision
from coordinator.db.models import Clone, TemplateDeletion, TemplateSyncTask, TemplateUpload
from coordinator.db.outage import OUTAGE, unreachable
from coordinator.db.session import create_engine, session_factory
from coordinator.db.shared_reads import SharedReads
from coordinator.errors import CoordinatorError, Refusal
from coordinator.events.hub import Hub
from coordinator.inventory.refresher import InventoryRefresher
from coordinator.jobs.cleanup import remove_failed_copies
from coordinator.jobs.clones import CloneJobs
from coordinator.jobs.engine import JobRunner
from coordinator.jobs.imports import ImportJobs
from coordinator.jobs.orphans import remove_orphans
from coordinator.jobs.syncs import SyncScheduler, SyncWatcher
from coordinator.jobs.version_pruner import VersionPruner
from coordinator.jobs.vm_sweep import sweep_vms
from coordinator.metrics import CoordinatorMetrics, http_counter
from coordinator.shared_limits import SharedLimit
from coordinator.states import clone as clone_states
from coordinator.states import sync_task
from coordinator.states.deletion import DeletionStatus
from coordinator.states.upload import IMPORT_QUEUE
from coordinator.template_delete import DeleteJobs
from coordinator.ui import routes as ui
from coordinator.upload_slots import UploadSlots
from shared import server_header
from shared.error_slugs import ErrorSlug
from shared.metrics import metrics_handler
from shared.pacer import Pacer
from shared.tickets import TicketSigner, TicketVerifier

log = logging.getLogger(__name__)

USER_API = [
    clusters.routes,
    nodes.routes,
    storages.routes,
    agents.routes,
    upload.routes,
    tus.routes,
    from_vm.routes,
    from_url.routes,
    from_volume.routes,
    templates.routes,
    sync_tasks.routes,
    clones.routes,
    versions.routes,
    events.routes,
]
JANITOR_INTERVAL = 30.0
# Seconds a client is asked to wait while the database does not answer (a MariaDB restart
# takes a few seconds).
DATABASE_RETRY_AFTER = 5
# Staged files younger than this are never judged orphans (their rows may not be visible yet).
ORPHAN_GRACE = timedelta(minutes=10)


class SchemaOutdated(CoordinatorError, RuntimeError):
    pass


@web.middleware
async def error_envelope(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure leaves as the contract's error envelope; no stack trace reaches a client."""
    try:
        return await handler(request)
    except (ApiError, Refusal) as raised:
        exc = from_refusal(raised) if isinstance(raised, Refusal) else raised
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        retry_after = exc.retry_after
        if retry_after is None and exc.status in (429, 503):
            # Every 503 is about an agent (none live, or it failed): the coordinator learns
            # of an agent's comings and goings at its heartbeat's pace.
            retry_after = request.app[CONFIG].heartbeat_interval
        if retry_after is not None:
            headers |= retry_after_header(retry_after)
        return error_response(exc.status, exc.error, exc.message, exc.extra, headers)
    except web.HTTPNotFound:
        return error_response(404, ErrorSlug.ROUTE_NOT_FOUND, f"no route {request.method} {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            ErrorSlug.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
        )
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, ErrorSlug.TOO_LARGE, exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own refusals (e.g. a body it cannot read) leave as the envelope too
        return error_response(exc.status, ErrorSlug.HTTP_ERROR, exc.text or exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if unreachable(exc):
            OUTAGE.failed(f"answering {request.method} {request.path}", exc)
            return error_response(
                503,
                ErrorSlug.DATABASE_UNAVAILABLE,
                "the coordinator's database does not answer; try again shortly",
                headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
            )
        ref = secrets.token_hex(4)
        log.exception("unhandled error in %s %s (ref %s)", request.method, request.path, ref)
        return error_response(
            500, ErrorSlug.INTERNAL_ERROR, f"internal error (ref {ref}); see the coordinator log"
        )


async def _resources(app: web.Application) -> AsyncIterator[None]:
    engine = await _open_database(app)
    config = app[CONFIG]
    app[INVENTORY] = InventoryRefresher(config, app[DB])
    app[UPLOAD_SLOTS] = UploadSlots(
        app[DB], config.max_concurrent_uploads, config.max_uploads_per_token, config.job_lease_seconds
    )
    http = _open_agent_links(app)
    _add_import_runner(app)
    _add_sync_runners(app)
    _add_delete_runner(app)
    _add_version_pruner(app)
    _add_clone_runner(app)
    background = _start_background(app)
    log.info("coordinator ready (database %s)", engine.url.render_as_string(hide_password=True))
    yield
    await _stop_background(background)
    await app[IMPORTS].stop()
    await app[SYNC_WATCHERS].stop()
    await app[DELETES].stop()
    await app[CLONES].stop()
    await http.close()
    await app[READS].close()
    await engine.dispose()
    log.info("stopped")


async def _open_database(app: web.Application) -> AsyncEngine:
    """The engine, the session factory and the fast reads, once the schema is known current."""
    engine = create_engine(app[CONFIG].resolved_database_url)
    app[ENGINE] = engine
    app[DB] = session_factory(engine)
    app[METRICS].attach(engine, app[DB])
    revision = await current_revision(engine)
    if revision != SCHEMA_HEAD:
        await engine.dispose()
        raise SchemaOutdated(
            f"database schema is at {revision or 'nothing'}, this version needs {SCHEMA_HEAD}: "
            "run `pvesphere-coordinator migrate` first"
        )
    app[READS] = SharedReads(open_reads(engine))
    app[EVENTS] = Hub(engine, app[CONFIG].events_queue_max)
    return engine


def _open_agent_links(app: web.Application) -> aiohttp.ClientSession:
    """``app[AGENTS]`` over a new HTTP session; returns the session (closed at the stop)."""
    # One connection pool for every agent, each checked against the agents' CA; no total
    # timeout (uploads stream for as long as they take).
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=app[AGENT_TLS]),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )
    app[AGENTS] = AgentLinks(app[DB], http, app[CREDENTIALS], app[CONFIG].agent_timeout)
    return http


def _version_imported(app: web.Application) -> None:
    """A version is available on its import node: its rollout's sync tasks are due now (the
    scheduler's next round would see them within POLL_SECONDS, 1 s, of a rollout that takes
    a few seconds)."""
    app[VERSIONS].wake()
    if SYNCS in app:
        app[SYNCS].wake()


def _add_import_runner(app: web.Application) -> None:
    config = app[CONFIG]
    lease = config.job_lease_seconds
    imports = ImportJobs(config, app[DB], app[AGENTS], app[INVENTORY], lambda: _version_imported(app))
    app[IMPORTS] = JobRunner(
        "import",
        app[DB],
        TemplateUpload,
        IMPORT_QUEUE,
        imports.run,
        give_up=imports.give_up,
        limits=config.error_limits("import"),
        concurrency=config.max_concurrent_imports,
        lease=lease,
        shared_limit=SharedLimit(app[DB], "import", config.max_concurrent_imports, lease),
    )


def _add_sync_runners(app: web.Application) -> None:
    """The sync scheduler and the runner of the watchers of running transfers."""
    config = app[CONFIG]

    def wake_syncs() -> None:
        app[SYNCS].wake()
        app[SYNC_WATCHERS].wake()

    planner = SharedLimit(app[DB], "sync-planner", 1, config.job_lease_seconds)
    app[SYNCS] = SyncScheduler(config, app[DB], app[AGENTS], app[TICKETS], wake_syncs, planner)
    watcher = SyncWatcher(config, app[DB], app[AGENTS], app[INVENTORY], wake_syncs, app[METRICS].copied)
    app[SYNC_WATCHERS] = JobRunner(
        "sync",
        app[DB],
        TemplateSyncTask,
        sync_task.RUNNING,
        watcher.run,
        give_up=watcher.give_up,
        limits=config.error_limits("sync"),
        # every running transfer has a watcher: as many as the per-node limits allow at once
        concurrency=256,
        lease=config.job_lease_seconds,
        poll=1.0,
    )


def _add_delete_runner(app: web.Application) -> None:
    config = app[CONFIG]
    app[DELETE_JOBS] = DeleteJobs(app[DB], app[AGENTS])
    app[DELETES] = JobRunner(
        "delete",
        app[DB],
        TemplateDeletion,
        (DeletionStatus.RUNNING,),
        app[DELETE_JOBS].run,
        give_up=app[DELETE_JOBS].give_up,
        limits=config.error_limits("delete"),
        concurrency=4,
        lease=config.job_lease_seconds,
        poll=1.0,
    )


def _add_version_pruner(app: web.Application) -> None:
    config = app[CONFIG]
    app[VERSIONS] = VersionPruner(
        app[DB],
        app[DELETE_JOBS],
        config.keep_versions,
        app[INVENTORY].used_vmids,
        config.version_prune_interval,
    )


def _add_clone_runner(app: web.Application) -> None:
    config = app[CONFIG]
    jobs = CloneJobs(config, app[DB], app[AGENTS], app[INVENTORY])
    app[CLONES] = JobRunner(
        "clone",
        app[DB],
        Clone,
        clone_states.ACTIVE,
        jobs.run,
        give_up=jobs.give_up,
        limits=config.error_limits("clone"),
        # most wait (for a sync task, a node's slot); max_clones_per_node limits the real work
        concurrency=64,
        lease=config.job_lease_seconds,
        poll=1.0,
    )


def _start_background(app: web.Application) -> list[asyncio.Task[None]]:
    lease = app[CONFIG].job_lease_seconds
    return [
        asyncio.create_task(app[INVENTORY].run_forever(), name="inventory"),
        asyncio.create_task(app[IMPORTS].run_forever(), name="imports"),
        asyncio.create_task(app[SYNCS].run_forever(), name="sync-scheduler"),
        asyncio.create_task(app[SYNC_WATCHERS].run_forever(), name="sync-watchers"),
        asyncio.create_task(app[DELETES].run_forever(), name="deletes"),
        asyncio.create_task(app[CLONES].run_forever(), name="clones"),
        asyncio.create_task(app[VERSIONS].run_forever(), name="versions"),
        asyncio.create_task(_janitor(app), name="janitor"),
        asyncio.create_task(shared_limits.keep_alive(app[DB], lease), name="shared-limits"),
        asyncio.create_task(_vm_sweeper(app), name="vm-sweep"),
    ]


async def _stop_background(background: list[asyncio.Task[None]]) -> None:
    """Cancels every background task, then waits for each to end."""
    for task in background:
        task.cancel()
    for task in background:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _janitor(app: web.Application) -> None:
    """Periodic clean-up: uploads cut off by a coordinator stop, old failed sync copies,
    staged files nothing needs any more."""
    keep = timedelta(hours=app[CONFIG].keep_failed_copies_hours)
    agent_timeout = timedelta(seconds=app[CONFIG].agent_timeout)

    async def expire() -> None:
        expired = await uploads.expire_abandoned(app[DB], app[AGENTS])
        if expired:
            log.info("janitor: %d upload(s) interrupted or expired were cleaned up", expired)

    # Each job on its own: one that fails (a row it cannot handle) must not keep the others
    # from running, round after round.
    jobs: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("expiring interrupted uploads", expire),
        ("removing old failed copies", lambda: remove_failed_copies(app[DB], app[AGENTS], keep)),
        (
            "removing orphaned files",
            lambda: remove_orphans(app[DB], app[AGENTS], agent_timeout, ORPHAN_GRACE),
        ),
    ]
    while True:
        for what, job in jobs:
            try:
                await job()
            except Exception as exc:
                if unreachable(exc):
                    OUTAGE.failed("cleaning up", exc)
                    break  # the database is down: the other jobs would fail the same way
                log.exception("janitor: %s failed; will retry", what)
        await asyncio.sleep(JANITOR_INTERVAL)


async def _vm_sweeper(app: web.Application) -> None:
    """Removes leaked VMs of ours every vm_sweep_interval (see coordinator/jobs/vm_sweep.py)."""
    config = app[CONFIG]
    agent_timeout = timedelta(seconds=config.agent_timeout)
    vmid_range = (config.template_vmid_min, config.template_vmid_max)
    while True:
        await asyncio.sleep(config.vm_sweep_interval)
        try:
            await sweep_vms(app[DB], app[AGENTS], agent_timeout, vmid_range)
        except Exception:
            log.exception("VM sweep failed; will retry")


async def _close_events(app: web.Application) -> None:
    """Subscribers are told the coordinator stops (close code 1001) before their handlers end."""
    if EVENTS in app:
        await app[EVENTS].close()


def create_app(config: CoordinatorConfig, agent_tls: ssl.SSLContext) -> web.Application:
    """The coordinator; ``agent_tls`` checks the certificates of the agents it calls."""
    metrics = CoordinatorMetrics(config.agent_timeout)
    app = web.Application(middlewares=[http_counter(metrics), error_envelope])
    server_header.name_server(app, server_header.COORDINATOR)
    app[METRICS] = metrics
    app[CONFIG] = config
    app[AGENT_TLS] = agent_tls
    app[CREDENTIALS] = Credentials.from_file(config.agent_key_file)
    app[STARTED_AT] = time.monotonic()
    app[TOKEN_CACHE] = TokenCache()
    app[UPLOAD_PACER] = Pacer(config.max_upload_rate)
    app[TICKETS] = TicketSigner(config.resolved_ticket_key_file)
    app[TICKET_VERIFIER] = TicketVerifier(app[TICKETS].public_key)
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_close_events)

    openapi.add_route(app, mount(app, USER_API, API_PREFIX))
    mount(app, [agent_api.routes], AGENT_API_PREFIX)
    health.add_routes(app)
    # No token (contract 1): what Prometheus scrapes.
    app.router.add_get("/metrics", metrics_handler(metrics.registry, metrics.refresh), name="metrics")
    ui.add_routes(app)
    return app

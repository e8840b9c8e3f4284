"""Typed keys for what the coordinator's aiohttp application carries."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

if TYPE_CHECKING:
    from coordinator.agents.credentials import Credentials
    from coordinator.agents.links import AgentLinks
    from coordinator.api.token_cache import TokenCache
    from coordinator.config import CoordinatorConfig
    from coordinator.db.fast_reads import Reads
    from coordinator.events.hub import Hub
    from coordinator.inventory.refresher import InventoryRefresher
    from coordinator.jobs.engine import JobRunner
    from coordinator.jobs.syncs import SyncScheduler
    from coordinator.jobs.version_pruner import VersionPruner
    from coordinator.template_delete import DeleteJobs
    from coordinator.upload_slots import UploadSlots
    from shared.pacer import Pacer
    from shared.tickets import TicketSigner, TicketVerifier

CONFIG: web.AppKey[CoordinatorConfig] = web.AppKey("config")
ENGINE = web.AppKey("engine", AsyncEngine)
DB: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("db")
# The API's hot reads, past the ORM session (coordinator/db/fast_reads.py).
READS: web.AppKey[Reads] = web.AppKey("reads")
# API tokens found live in the last second (coordinator/api/token_cache.py).
TOKEN_CACHE: web.AppKey[TokenCache] = web.AppKey("token_cache")
INVENTORY: web.AppKey[InventoryRefresher] = web.AppKey("inventory")
CREDENTIALS: web.AppKey[Credentials] = web.AppKey("credentials")
STARTED_AT = web.AppKey("started_at", float)
AGENTS: web.AppKey[AgentLinks] = web.AppKey("agents")
IMPORTS: web.AppKey[JobRunner] = web.AppKey("imports")
UPLOAD_SLOTS: web.AppKey[UploadSlots] = web.AppKey("upload_slots")
UPLOAD_PACER: web.AppKey[Pacer] = web.AppKey("upload_pacer")
TICKETS: web.AppKey[TicketSigner] = web.AppKey("tickets")
SYNCS: web.AppKey[SyncScheduler] = web.AppKey("syncs")
SYNC_WATCHERS: web.AppKey[JobRunner] = web.AppKey("sync_watchers")
# Cascade deletes: the jobs' runner (leases, background attempts) and the attempts themselves.
DELETES: web.AppKey[JobRunner] = web.AppKey("deletes")
DELETE_JOBS: web.AppKey[DeleteJobs] = web.AppKey("delete_jobs")
# Clones: the jobs' runner (pending, waiting_for_sync, cloning clones; coordinator/jobs/clones.py).
CLONES: web.AppKey[JobRunner] = web.AppKey("clones")
# keep_versions and unfinished version deletes (coordinator/jobs/version_pruner.py).
VERSIONS: web.AppKey[VersionPruner] = web.AppKey("versions")
# Checks agents' certificates (coordinator/listeners.py, agent_tls).
AGENT_TLS = web.AppKey("agent_tls", ssl.SSLContext)
# Live events: the change reader and its WebSocket subscribers (coordinator/events/hub.py),
# and the check of the tickets browsers connect with (coordinator/events/tickets.py).
EVENTS: web.AppKey[Hub] = web.AppKey("events")
TICKET_VERIFIER: web.AppKey[TicketVerifier] = web.AppKey("ticket_verifier")

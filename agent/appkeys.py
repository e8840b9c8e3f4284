"""Typed keys for what the agent's aiohttp application carries."""

from __future__ import annotations

from aiohttp import web

from agent.cloner import Cloner
from agent.config import AgentConfig
from agent.coordinator_link import CoordinatorLink
from agent.downloader import Downloader
from agent.eviction import Evictor
from agent.exporter import Exporter
from agent.importer import Importer
from agent.metrics import AgentMetrics
from agent.pve import NodePve
from agent.resumable import ResumableFiles
from agent.staging import Staging
from agent.transfer.manifests import StagedManifests
from agent.transfer.plain_data import PlainData
from agent.transfer.policy import PeerPolicy
from agent.transfer.receive import Receives
from agent.transfer.send import Sender
from agent.vm_journal import VmJournal

CONFIG = web.AppKey("config", AgentConfig)
PVE = web.AppKey("pve", NodePve)
# This node's own credential: the only one its order endpoints accept.
CREDENTIAL = web.AppKey("credential", str)
STARTED_AT = web.AppKey("started_at", float)
STARTED_WALL = web.AppKey("started_wall", str)
STAGING = web.AppKey("staging", Staging)
RESUMABLE = web.AppKey("resumable", ResumableFiles)
VM_JOURNAL = web.AppKey("vm_journal", VmJournal)
IMPORTER = web.AppKey("importer", Importer)
CLONER = web.AppKey("cloner", Cloner)
TRANSFER_POLICY = web.AppKey("transfer_policy", PeerPolicy)
RECEIVES = web.AppKey("receives", Receives)
SENDER = web.AppKey("sender", Sender)
MANIFESTS = web.AppKey("manifests", StagedManifests)
LINK = web.AppKey("link", CoordinatorLink)
PLAIN_DATA = web.AppKey("plain_data", PlainData)
EVICTOR = web.AppKey("evictor", Evictor)
EXPORTER = web.AppKey("exporter", Exporter)
DOWNLOADER = web.AppKey("downloader", Downloader)
# GET /metrics: this agent's registry and counters (agent/metrics.py).
METRICS = web.AppKey("metrics", AgentMetrics)

"""Typed keys for what the agent's aiohttp application carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from agent.config import AgentConfig
from agent.pve import NodePve
from agent.staging import Staging
from agent.transfer.policy import PeerPolicy
from agent.vm_journal import VmJournal

CONFIG = web.AppKey("config", AgentConfig)
PVE = web.AppKey("pve", NodePve)
# This node's own credential: the only one its order endpoints accept.
CREDENTIAL = web.AppKey("credential", str)
STARTED_AT = web.AppKey("started_at", float)
STARTED_WALL = web.AppKey("started_wall", str)
STAGING = web.AppKey("staging", Staging)
VM_JOURNAL = web.AppKey("vm_journal", VmJournal)

if TYPE_CHECKING:
    from agent.coordinator_link import CoordinatorLink
    from agent.eviction import Evictor
    from agent.importer import Importer
    from agent.transfer.plain_data import PlainData
    from agent.transfer.receive import Receives
    from agent.transfer.send import Sender
IMPORTER: web.AppKey[Importer] = web.AppKey("importer")
TRANSFER_POLICY = web.AppKey("transfer_policy", PeerPolicy)
RECEIVES: web.AppKey[Receives] = web.AppKey("receives")
SENDER: web.AppKey[Sender] = web.AppKey("sender")
LINK: web.AppKey[CoordinatorLink] = web.AppKey("link")
PLAIN_DATA: web.AppKey[PlainData] = web.AppKey("plain_data")
EVICTOR: web.AppKey[Evictor] = web.AppKey("evictor")

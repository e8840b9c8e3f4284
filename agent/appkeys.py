"""Typed keys for what the agent's aiohttp application carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from agent.config import AgentConfig
from agent.pve import NodePve
from agent.staging import Staging

CONFIG = web.AppKey("config", AgentConfig)
PVE = web.AppKey("pve", NodePve)
TOKEN = web.AppKey("token", str)
STARTED_AT = web.AppKey("started_at", float)
STARTED_WALL = web.AppKey("started_wall", str)
STAGING = web.AppKey("staging", Staging)

if TYPE_CHECKING:
    from agent.importer import Importer
IMPORTER: web.AppKey[Importer] = web.AppKey("importer")

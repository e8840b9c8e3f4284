"""Keys of the objects the aiohttp application carries."""

from __future__ import annotations

from aiohttp import web

from pvesim.auth import AccessStore
from pvesim.faults import FaultRegistry
from pvesim.state import Cluster
from pvesim.tasks import TaskManager

CLUSTER_KEY = web.AppKey("cluster", Cluster)
TASKS_KEY = web.AppKey("tasks", TaskManager)
ACCESS_KEY = web.AppKey("access", AccessStore)
FAULTS_KEY = web.AppKey("faults", FaultRegistry)

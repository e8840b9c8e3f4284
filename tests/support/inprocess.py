"""The coordinator's app and the PVE emulator it manages, served from a thread of the test
process: for tests of HTTP semantics (envelopes, validation, auth, the OpenAPI document)
that need no agent. No subprocess starts, so a session of these costs about a second
instead of a stack's ten.

Both apps are the production ones (``create_app``, ``build_app``) behind aiohttp's
``TestServer`` on loopback, the coordinator on the database a stack would use (SQLite in
a temporary directory, or a MariaDB database). Tests call them through ``Api`` (requests),
exactly as they call a stack, so an assertion moved here asserts the same thing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestServer

from coordinator import config as coordinator_config
from coordinator import tokens
from coordinator.agents.credentials import Credentials
from coordinator.app import create_app
from coordinator.appkeys import DB
from coordinator.db.migrate import upgrade_to_head
from coordinator.db.session import create_engine
from coordinator.listeners import agent_tls
from demo.stack import StackError, _toml
from pvesim.cli import open_pvesh_socket, prepare_state, write_token_file
from pvesim.faults import FaultRegistry
from pvesim.server import build_app
from pvesim.tasks import TaskManager
from shared.tickets import TicketSigner
from shared.tls import server_context
from tests.support.api import Api

T = TypeVar("T")
CLUSTER_NAME = "pve-inprocess"
NODES = 3
# The thread both apps run in (its log records are told apart by this name).
APPS_THREAD = "inprocess-apps"
# Every wait on the thread's loop has a deadline (a hung start fails the test, not CI).
DEADLINE = 60.0


class InProcess:
    """``start()`` serves both apps; ``api`` is the coordinator's user API with an admin token."""

    def __init__(self, base: Path, database_url: str = "") -> None:
        self.base = base
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=APPS_THREAD, daemon=True)
        self.servers: list[TestServer] = []
        self.cluster_id = 0
        self.admin_token = ""

    # ------------------------------------------------------------- start, stop
    def start(self) -> None:
        self.thread.start()
        try:
            self._start_emulator()
            self.config_file = self._write_config()
            self._migrate()
            self.app = create_app(self.config, agent_tls(self.config))
            server = self._serve(self.app)
            self.url = str(server.make_url("")).rstrip("/")
            self.admin_token = self.token("admin")
            self.cluster_id = self._register_cluster()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in reversed(self.servers):
            self.run(server.close())
        self.servers.clear()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(DEADLINE)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the apps' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE)

    def _serve(self, app: Any, **kw: Any) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        self.run(server.start_server(**kw))
        self.servers.append(server)
        return server

    # ------------------------------------------------------------- the emulator
    def _start_emulator(self) -> None:
        self.pvesim_dir = self.base / "pvesim"
        cluster, access = prepare_state(self.pvesim_dir, CLUSTER_NAME, NODES)
        tasks = TaskManager(cluster.state_dir, cluster.nodes)
        faults = FaultRegistry()
        tasks.before_worker = faults.check_task
        tls_dir = self.pvesim_dir / "tls"
        tls = server_context(tls_dir / "server.pem", tls_dir / "server-key.pem")
        server = self._serve(build_app(cluster, tasks, access, faults), ssl=tls)
        assert server.port is not None
        assert server.runner is not None
        self.run(open_pvesh_socket(server.runner, cluster.state_dir))
        write_token_file(cluster, access, "127.0.0.1", server.port)

    @property
    def ca_file(self) -> Path:
        return self.pvesim_dir / "ca.pem"

    # ------------------------------------------------------------- the coordinator
    def _write_config(self) -> Path:
        """The settings a stack's coordinator gets, minus its listeners (``TestServer`` listens)."""
        data_dir = self.base / "coordinator"
        data_dir.mkdir(mode=0o700)
        settings: dict[str, Any] = {
            "data_dir": str(data_dir),
            "agent_ca_file": str(self.ca_file),
            "pve_ca_file": str(self.ca_file),
        }
        if self.database_url:
            settings["database_url"] = self.database_url
        path = data_dir / "coordinator.toml"
        path.write_text(_toml(settings))
        self.config = coordinator_config.load(path)
        return path

    def _migrate(self) -> None:
        """What `pvesphere-coordinator migrate` does (Alembic runs its own loop: not on the apps')."""
        url = self.config.resolved_database_url
        create_engine(url)  # creates the SQLite directory
        upgrade_to_head(url)
        TicketSigner(self.config.resolved_ticket_key_file)
        Credentials.from_file(self.config.agent_key_file)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`pvesphere-coordinator` on this coordinator's database, as an administrator runs it."""
        result = subprocess.run(
            [sys.executable, "-m", "coordinator.cli", "--config", str(self.config_file), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"pvesphere-coordinator {' '.join(args)} failed:\n{result.stderr}")
        return result

    def token(self, role: str, name: str = "") -> str:
        """A new API token's secret, made in the database as `token create` makes it (the CLI
        costs a second a run; ``cli`` is there for tests of the command itself)."""

        async def create() -> str:
            async with self.app[DB]() as session:
                return (await tokens.create(session, name or f"{role}-{secrets.token_hex(3)}", role)).secret

        return self.run(create())

    def _register_cluster(self) -> int:
        """As an administrator registers a cluster: the emulator's token, TLS checked."""
        token = json.loads((self.pvesim_dir / "api-token.json").read_text())
        body = {"api_url": token["api_url"], "token_id": token["token_id"], "token_secret": token["secret"]}
        return int(self.api.post("/clusters", json={**body, "verify_ssl": True}).ok()["id"])

    @property
    def api_url(self) -> str:
        return self.url + "/api/v1"

    @property
    def api(self) -> Api:
        return Api(self.api_url, self.admin_token)

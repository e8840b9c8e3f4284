"""Start and stop the emulator, the agents and the coordinator as subprocesses.

TLS as on a real cluster: the emulated cluster's CA (pvesim's ca.pem, PVE's
pve-root-ca.pem) issues each node's certificate (nodes/NODE/pve-ssl.pem), which its agent
serves HTTPS with, and the coordinator's. Agents reach the coordinator over HTTPS; users
and tests reach its API also over plain HTTP on loopback (plain_http_port), as the guide's
curl examples do.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pvesim.tls import ensure_issued_certificate, ensure_node_certificate
from shared.private_files import replace_private


class StackError(RuntimeError):
    pass


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# Listening ports come from below the kernel's ephemeral range (32768-60999 by default): a
# port picked inside it may be taken, between the check and the bind, as the local end of
# any outgoing connection (seen: an agent that could not bind while tests ran in parallel).
# Test processes running side by side each take a share of it (use_port_share): two of them
# never hand out the same port, even before either has bound it.
LISTEN_PORTS = range(20000, 32700)
# Handed out by this process already: a port is free until its process binds it, so a second
# call before that would otherwise return it again.
_handed_out: set[int] = set()


def use_port_share(index: int, count: int) -> None:
    """From now on hand out ports from the ``index``-th of ``count`` equal slices of
    LISTEN_PORTS only (one slice per test worker)."""
    global LISTEN_PORTS
    size = len(LISTEN_PORTS) // count
    LISTEN_PORTS = LISTEN_PORTS[index * size : (index + 1) * size]


def free_port() -> int:
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports (agents listen on a run of them) that are free
    now and were not handed out before by this process; all ``count`` count as handed out."""
    for _ in range(1000):
        first = random.choice(LISTEN_PORTS[: len(LISTEN_PORTS) - count + 1])
        run = range(first, first + count)
        if not _handed_out.intersection(run) and all(port_is_free(p) for p in run):
            _handed_out.update(run)
            return first
    raise StackError(f"no {count} free ports in {LISTEN_PORTS.start}..{LISTEN_PORTS.stop - 1}")


def http_json(
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    timeout: float = 10,
    ca_file: Path | None = None,
) -> tuple[int, Any]:
    """``ca_file``: what an https URL's certificate is checked against."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    log_file: TextIO | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 (lives as long as the process)
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10) -> int | None:
        if self.popen is None:
            return None
        if self.running:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return self.popen.returncode

    def kill(self) -> int | None:
        """Gone at once, as a crashed process or a node losing power (no clean-up of its own)."""
        if self.running:
            assert self.popen is not None
            self.popen.kill()
        return self.stop()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for_emulator(state_dir: Path, proc: Proc, timeout: float = 30) -> dict[str, str]:
    """The emulator's connection facts, once it listens (it writes them after binding)."""
    path = state_dir / "api-token.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise StackError(f"{proc.name} exited during start-up:\n{proc.tail()}")
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            time.sleep(0.1)
    raise StackError(f"{proc.name} did not start listening in {timeout}s:\n{proc.tail()}")


@dataclass
class StackSettings:
    base_dir: Path
    # The coordinator's plain-HTTP listener on loopback (users, the guide) and its HTTPS one
    # (agents; users too).
    coordinator_port: int = 8080
    coordinator_tls_port: int = 8443
    emulator_port: int = 8006
    first_agent_port: int = 8101
    nodes: int = 3
    cluster_name: str = "pve-demo"
    database_url: str = ""
    # What agents are told the coordinator is (default: its HTTPS listener), e.g. a load
    # balancer in front of coordinator replicas.
    agent_coordinator_url: str = ""
    # Extra coordinator settings (TOML values) for tests, e.g. shorter timeouts.
    coordinator_settings: dict[str, Any] = field(default_factory=dict)
    agent_settings: dict[str, Any] = field(default_factory=dict)
    # Settings for one node's agent only, e.g. {"pve-node3": {"staging_dir": "/mnt/small"}}.
    node_agent_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where the emulator and the coordinator listen (and agents listen, unless agent_hosts says).
    host: str = "127.0.0.1"
    # One node's agent address, to listen on and advertise (benchmarks: one network namespace each).
    agent_hosts: dict[str, str] = field(default_factory=dict)
    # A command one node's agent is started under, e.g. {"pve-node1": ["ip", "netns", "exec", "ns1"]}.
    agent_command_prefix: dict[str, list[str]] = field(default_factory=dict)


def _toml(settings: dict[str, Any]) -> str:
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
    return "\n".join(lines) + "\n"


class Stack:
    """The whole system on loopback. Reuses ``base_dir`` across runs."""

    def __init__(self, settings: StackSettings) -> None:
        self.s = settings
        self.base = settings.base_dir.resolve()
        self.python = sys.executable
        self.emulator: Proc | None = None
        self.coordinator: Proc | None = None
        # More coordinators on the same database and data_dir (start_replica), by listener port.
        self.replicas: dict[int, Proc] = {}
        self.agents: dict[str, Proc] = {}
        self.admin_token = ""
        self.cluster_id: int | None = None

    # -------------------------------------------------------------- paths
    @property
    def pvesim_dir(self) -> Path:
        return self.base / "pvesim"

    @property
    def ca_file(self) -> Path:
        """The emulated cluster's CA (PVE's pve-root-ca.pem): it issued every certificate here."""
        return self.pvesim_dir / "ca.pem"

    def client_tls(self) -> ssl.SSLContext:
        """Checks certificates as the agents and the coordinator do: against the cluster CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def coordinator_url(self) -> str:
        """The coordinator's plain-HTTP listener, on loopback only."""
        return f"http://127.0.0.1:{self.s.coordinator_port}"

    @property
    def coordinator_https_url(self) -> str:
        """The coordinator's HTTPS listener: what agents use."""
        return f"https://{self.s.host}:{self.s.coordinator_tls_port}"

    @property
    def api(self) -> str:
        return self.coordinator_url + "/api/v1"

    @property
    def database_url(self) -> str:
        return self.s.database_url or f"sqlite+aiosqlite:///{self.base / 'coordinator.db'}"

    def node_names(self) -> list[str]:
        return [f"pve-node{i}" for i in range(1, self.s.nodes + 1)]

    def agent_port(self, node: str) -> int:
        return self.s.first_agent_port + self.node_names().index(node)

    def agent_host(self, node: str) -> str:
        return self.s.agent_hosts.get(node, self.s.host)

    def agent_url(self, node: str) -> str:
        return f"https://{self.agent_host(node)}:{self.agent_port(node)}"

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
        env.update(extra or {})
        return env

    # -------------------------------------------------------------- parts
    def start_emulator(self) -> None:
        """Also a restart after ``stop_emulator``: same port, same state directory."""
        # The emulator writes this once it listens: one left by a killed run must not be
        # taken for the new run's.
        (self.pvesim_dir / "api-token.json").unlink(missing_ok=True)
        self.emulator = Proc(
            "pvesim",
            [
                self.python,
                "-m",
                "pvesim.cli",
                "serve",
                "--state-dir",
                str(self.pvesim_dir),
                "--host",
                self.s.host,
                "--port",
                str(self.s.emulator_port),
                "--cluster-name",
                self.s.cluster_name,
                "--nodes",
                str(self.s.nodes),
            ],
            self._env(),
            self.base / "logs" / "pvesim.log",
        )
        self.emulator.start()
        wait_for_emulator(self.pvesim_dir, self.emulator)

    def stop_emulator(self, crash: bool = True) -> None:
        """PVE goes down alone (the agents and the coordinator keep running): killed by default,
        so its running tasks die without a verdict as on a node that lost power; ``crash=False``
        stops it with SIGTERM. ``start_emulator`` brings it back with the same state."""
        if self.emulator is not None:
            if crash:
                self.emulator.kill()
            else:
                self.emulator.stop()

    def pve_token(self) -> dict[str, str]:
        return json.loads((self.pvesim_dir / "api-token.json").read_text())

    def write_coordinator_config(self, name: str = "coordinator", port: int = 0, tls_port: int = 0) -> Path:
        """Needs the cluster CA (the emulator has started): it issues the coordinator's certificate.
        A replica (``name``) listens on its own ports; everything else is the first one's."""
        tls = self.base / "tls"
        tls.mkdir(mode=0o700, exist_ok=True)
        cert, key = ensure_issued_certificate(
            self.pvesim_dir, tls / "coordinator.pem", tls / "coordinator.key", "coordinator", [self.s.host]
        )
        settings: dict[str, Any] = {
            "host": self.s.host,
            "port": tls_port or self.s.coordinator_tls_port,
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "plain_http_port": port or self.s.coordinator_port,
            "agent_ca_file": str(self.ca_file),
            "data_dir": str(self.base),
            "pve_ca_file": str(self.ca_file),
            "ready_requires_agents": True,
        }
        if self.s.database_url:
            settings["database_url"] = self.s.database_url
        settings.update(self.s.coordinator_settings)
        path = self.base / f"{name}.toml"
        path.write_text(_toml(settings))
        return path

    def coordinator_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        config = self.base / "coordinator.toml"
        result = subprocess.run(
            [self.python, "-m", "coordinator.cli", "--config", str(config), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise StackError(f"pvesphere-coordinator {' '.join(args)} failed:\n{result.stderr}")
        return result

    def start_coordinator(self) -> None:
        self.coordinator = Proc(
            "coordinator",
            [self.python, "-m", "coordinator.cli", "--config", str(self.base / "coordinator.toml"), "serve"],
            self._env(),
            self.base / "logs" / "coordinator.log",
        )
        self.coordinator.start()
        self._wait_http(self.coordinator_url + "/healthz", self.coordinator, self.ca_file)

    def start_replica(self, port: int, tls_port: int) -> Proc:
        """Another coordinator on the same database and data_dir (so the same agent-credential
        and ticket-signing keys), listening on ``port`` (plain HTTP) and ``tls_port``; also a
        restart of one stopped before."""
        name = f"coordinator-{port}"
        config = self.write_coordinator_config(name, port, tls_port)
        proc = Proc(
            name,
            [self.python, "-m", "coordinator.cli", "--config", str(config), "serve"],
            self._env(),
            self.base / "logs" / f"{name}.log",
        )
        proc.start()
        self.replicas[port] = proc
        self._wait_http(f"http://127.0.0.1:{port}/healthz", proc, self.ca_file)
        return proc

    def _ensure_admin_token(self) -> str:
        path = self.base / "admin.token"
        if path.exists():
            token = path.read_text().strip()
            status, _ = http_json("GET", self.api + "/clusters?page_size=1", token)
            if status == 200:
                return token
            path.unlink()
        name = f"demo-admin-{secrets.token_hex(3)}"
        self.coordinator_cli("token", "create", "--name", name, "--role", "admin", "--secret-file", str(path))
        return path.read_text().strip()

    def agent_dir(self, node: str) -> Path:
        return self.base / "agents" / node

    def agent_credential(self, node: str) -> str:
        """The node's own agent credential (what the coordinator presents to that agent)."""
        return str(json.loads((self.agent_dir(node) / "credential").read_text())["credential"])

    def enroll_agents(self, nodes: list[str]) -> None:
        """Join tokens for the agents of ``nodes``, made as an administrator makes them, except
        for agents enrolled already (their credentials are kept across runs, like the database)."""
        missing = [n for n in nodes if not (self.agent_dir(n) / "credential").exists()]
        with ThreadPoolExecutor() as pool:  # a few seconds each: one CLI run per node, at once
            tokens = list(
                pool.map(lambda n: self.coordinator_cli("agent", "enroll", n).stdout.strip(), missing)
            )
        for node, token in zip(missing, tokens, strict=True):
            path = self.agent_dir(node) / "join.token"
            replace_private(path, (token + "\n").encode())

    def agent_config(self, node: str) -> Path:
        """Needs the cluster CA (the emulator has started): it issues the node's certificate."""
        cert, key = ensure_node_certificate(self.pvesim_dir, node, [self.agent_host(node)])
        settings: dict[str, Any] = {
            "node": node,
            "host": self.agent_host(node),
            "port": self.agent_port(node),
            "advertise_url": self.agent_url(node),
            "coordinator_url": self.s.agent_coordinator_url or self.coordinator_https_url,
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "tls_ca_file": str(self.ca_file),
            "coordinator_ca_file": str(self.ca_file),
            "join_token_file": str(self.agent_dir(node) / "join.token"),
            "credential_file": str(self.agent_dir(node) / "credential"),
            "staging_dir": str(self.agent_dir(node) / "staging"),
            "mdns": False,
        }
        settings.update(self.s.agent_settings)
        settings.update(self.s.node_agent_settings.get(node, {}))
        path = self.agent_dir(node) / "agent.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_toml(settings))
        return path

    def start_agent(self, node: str, ca_file: Path | None = None) -> Proc:
        """``ca_file``: what the agent's certificate is checked against while waiting for it to
        answer (default: the cluster CA, which issued it)."""
        config = self.agent_config(node)
        shim_dir = self.pvesim_dir / "nodes" / node / "bin"
        env = self._env({"PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
        prefix = self.s.agent_command_prefix.get(node, [])
        proc = Proc(
            f"agent-{node}",
            [*prefix, self.python, "-m", "agent.cli", "--config", str(config), "serve"],
            env,
            self.base / "logs" / f"agent-{node}.log",
        )
        proc.start()
        self.agents[node] = proc
        self._wait_http(self.agent_url(node) + "/health", proc, ca_file or self.ca_file)
        if self.cluster_id is not None and self.coordinator is not None and self.coordinator.running:
            self.wait_agent_live(node)  # a restart: ready once the coordinator takes it again
        return proc

    def wait_agent_live(self, node: str, timeout: float = 30) -> None:
        """Until the coordinator lists ``node``'s agent live (it registers after it answers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = http_json("GET", self.api + "/agents?page_size=100", self.admin_token)
            if status == 200 and any(
                a["node_name"] == node and a["cluster_name"] == self.s.cluster_name and a["live"]
                for a in body["data"]["list"]
            ):
                return
            time.sleep(0.1)
        raise StackError(f"agent of {node} not live at the coordinator after {timeout}s")

    def register_cluster(self) -> int:
        status, body = http_json("GET", self.api + "/clusters?page_size=100", self.admin_token)
        if status != 200:
            raise StackError(f"listing clusters failed: {status} {body}")
        token = self.pve_token()
        for cluster in body["data"]["list"]:
            if cluster["cluster_name"] == self.s.cluster_name:
                if cluster["api_url"] != token["api_url"]:
                    # The emulator moved to another port since the last run.
                    status, body = http_json(
                        "PUT",
                        f"{self.api}/clusters/{cluster['id']}",
                        self.admin_token,
                        {"api_url": token["api_url"]},
                        timeout=60,
                    )
                    if status != 200:
                        raise StackError(f"updating the emulated cluster failed: {status} {body}")
                return int(cluster["id"])
        status, body = http_json(
            "POST",
            self.api + "/clusters",
            self.admin_token,
            {
                "api_url": token["api_url"],
                "token_id": token["token_id"],
                "token_secret": token["secret"],
                "verify_ssl": True,
            },
            timeout=60,
        )
        if status != 200:
            raise StackError(f"registering the emulated cluster failed: {status} {body}")
        return int(body["data"]["id"])

    # -------------------------------------------------------------- all
    def start(self, ready_timeout: float = 60) -> None:
        # The coordinator's data_dir: its database holds the PVE token secret (made 0700 if older).
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.start_emulator()
            self.write_coordinator_config()
            self.coordinator_cli("migrate")
            self.start_coordinator()
            self.admin_token = self._ensure_admin_token()
            self.enroll_agents(self.node_names())
            for node in self.node_names():
                self.start_agent(node)
            self.cluster_id = self.register_cluster()
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = http_json("GET", self.coordinator_url + "/readyz")
            if status == 200:
                return body  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise StackError(f"coordinator not ready after {timeout}s: {body}")

    def stop(self) -> None:
        procs = [*self.agents.values(), *self.replicas.values(), self.coordinator, self.emulator]
        for proc in procs:
            if proc is not None:
                proc.signal(signal.SIGTERM)
        for proc in procs:
            if proc is not None:
                proc.stop()

    # -------------------------------------------------------------- waiting
    def _wait_http(self, url: str, proc: Proc, ca_file: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.running:
                raise StackError(f"{proc.name} exited during start-up:\n{proc.tail()}")
            try:
                status, _ = http_json("GET", url, timeout=2, ca_file=ca_file)
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise StackError(f"{proc.name} did not answer {url} in {timeout}s:\n{proc.tail()}")

"""Fixtures for the emulator's tests: a real `pvesim serve` process per test module.

Clients talk to it as they would to a PVE cluster: proxmoxer's https backend with the API
token (TLS verified against the cluster CA), or proxmoxer's local backend running the
node's `pvesh` shim found first in PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from proxmoxer import ProxmoxAPI

from demo.stack import Proc, wait_for_emulator

NODES = ("pve-node1", "pve-node2", "pve-node3")
CLUSTER_NAME = "pve-test"


@dataclass
class Emulator:
    """A running emulator and what a client needs to reach it."""

    state_dir: Path
    proc: Proc
    api_url: str
    token_id: str
    secret: str
    ca_file: str

    @property
    def host(self) -> str:
        return urlsplit(self.api_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.api_url).port or 8006

    @property
    def token_header(self) -> str:
        return f"PVEAPIToken={self.token_id}={self.secret}"

    def https(self, token_id: str | None = None, secret: str | None = None, **kw: Any) -> ProxmoxAPI:
        """proxmoxer over HTTPS with an API token, verifying TLS against the cluster CA."""
        user, name = (token_id or self.token_id).split("!")
        kw.setdefault("verify_ssl", self.ca_file)
        kw.setdefault("timeout", 30)
        return ProxmoxAPI(
            self.host,
            port=self.port,
            user=user,
            token_name=name,
            token_value=secret if secret is not None else self.secret,
            **kw,
        )

    def raw(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        auth: str | None = None,
    ) -> requests.Response:
        """A plain HTTPS call to /api2/json (to look at PVE's exact answer)."""
        headers = {"Authorization": auth if auth is not None else self.token_header}
        in_query = method in ("GET", "DELETE")
        return requests.request(
            method,
            f"{self.api_url}/api2/json{path}",
            params=params if in_query else None,
            data=None if in_query else params,
            headers=headers,
            verify=self.ca_file,
            timeout=30,
        )

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """The emulator's own /pvesim control API (root secret)."""
        secret = (self.state_dir / "root.secret").read_text().strip()
        resp = requests.request(
            method,
            f"{self.api_url}/pvesim{path}",
            headers={"Authorization": f"PVESimRoot={secret}"},
            json=body,
            verify=self.ca_file,
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()

    def bin_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node / "bin"

    def add_token(self, userid: str, name: str, privsep: bool) -> str:
        """`pvesim token add`, as an administrator would run it (the server picks it up)."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pvesim.cli",
                "token",
                "add",
                "--state-dir",
                str(self.state_dir),
                "--privsep",
                "1" if privsep else "0",
                userid,
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return str(json.loads(out.stdout)["value"])


def start_emulator(state_dir: Path) -> Emulator:
    proc = Proc(
        "pvesim",
        [
            sys.executable,
            "-m",
            "pvesim.cli",
            "serve",
            "--state-dir",
            str(state_dir),
            "--port",
            "0",
            "--cluster-name",
            CLUSTER_NAME,
            "--nodes",
            str(len(NODES)),
        ],
        dict(os.environ),
        state_dir.parent / f"{state_dir.name}.log",
    )
    proc.start()
    try:
        info = wait_for_emulator(state_dir, proc)
    except Exception:
        proc.stop()
        raise
    emu = Emulator(state_dir, proc, info["api_url"], info["token_id"], info["secret"], info["ca_file"])
    # PVE delays every 401 by 3 s; the tests that provoke one need not wait
    emu.control("POST", "/settings", {"auth_failure_delay": 0})
    return emu


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = start_emulator(tmp_path_factory.mktemp("pvesim") / "state")
    yield emu
    emu.proc.stop()


@pytest.fixture(scope="module")
def pve(emulator: Emulator) -> ProxmoxAPI:
    """proxmoxer, https backend, the default root@pam!pvesphere token."""
    return emulator.https()


@pytest.fixture
def pvesh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> ProxmoxAPI:
    """proxmoxer's local backend on pve-node1: `pvesh` comes from the node's bin dir."""
    monkeypatch.setenv("PATH", f"{emulator.bin_dir(NODES[0])}{os.pathsep}{os.environ.get('PATH', '')}")
    return ProxmoxAPI(backend="local", timeout=60)


@pytest.fixture(scope="module")
def qcow2_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small qcow2 image with some data in it, made with qemu-img."""
    path = tmp_path_factory.mktemp("images") / "disk.qcow2"
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as fh:
        fh.truncate(32 << 20)
        for off in range(0, 32 << 20, 4 << 20):
            fh.seek(off)
            fh.write(os.urandom(64 << 10))
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    raw.unlink()
    return path


def wait_task(api: ProxmoxAPI, upid: str, timeout: float = 30) -> dict[str, Any]:
    """Poll a UPID's status until the task has stopped."""
    node = upid.split(":")[1]
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = api.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"task {upid} still running after {timeout}s")
        time.sleep(0.05)


def task_log(api: ProxmoxAPI, upid: str) -> list[str]:
    node = upid.split(":")[1]
    return [entry["t"] for entry in api.nodes(node).tasks(upid).log.get(limit=0)]

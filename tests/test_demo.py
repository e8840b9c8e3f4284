"""`make demo` as a user runs it: it comes up, prints the ids and token, and stops cleanly."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from demo.stack import free_port


def _start(demo_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVESPHERE_")}
    env.update({"PVESPHERE_DEMO_DIR": str(demo_dir), "PVESPHERE_PORT": str(port)})
    return subprocess.Popen(
        [sys.executable, "-m", "demo"], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT
    )


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError("demo never became ready:\n" + log.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the demo's own processes, and everything under it: an agent may be running pvesh)."""
    demo = psutil.Process(proc.pid)
    children, everything = demo.children(), demo.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    return children, everything


def _an_agent_killed_is_started_again(
    proc: subprocess.Popen[bytes], port: int, headers: dict[str, str], log: Path
) -> None:
    """As its systemd unit would (Restart=on-failure): the demo goes on, the node's agent is
    back and live within seconds."""
    (agent,) = [
        p
        for p in psutil.Process(proc.pid).children()
        if "agent.cli" in p.cmdline() and "pve-node2" in str(p.cmdline())
    ]
    agent.kill()
    deadline = time.monotonic() + 60
    while "agent-pve-node2 is running again" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    assert "agent-pve-node2 ended (exit -9); starting it again in 3 s" in log.read_text()
    agents = requests.get(f"http://127.0.0.1:{port}/api/v1/agents", headers=headers, timeout=10).json()
    assert sorted((a["node_name"], a["live"]) for a in agents["data"]["list"]) == [
        ("pve-node1", True),
        ("pve-node2", True),
        ("pve-node3", True),
    ]
    assert agent.pid not in [p.pid for p in psutil.Process(proc.pid).children()]


def test_demo_starts_prints_ids_and_stops_cleanly(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    port = free_port()
    log = tmp_path / "demo.out"
    proc = _start(demo_dir, port, log)
    try:
        _wait_ready(port, proc, log)
        # What a script does next: read the token, use the cluster. Both are there already.
        token = (demo_dir / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        clusters = requests.get(
            f"http://127.0.0.1:{port}/api/v1/clusters", headers=headers, timeout=10
        ).json()
        assert [c["cluster_name"] for c in clusters["data"]["list"]] == ["pve-demo"]
        deadline = time.monotonic() + 10
        while "Logs follow" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        out = log.read_text()
        assert token.startswith("pvst_") and token in out
        assert "pve-demo" in out
        for name in ("pve-node1", "pve-node2", "pve-node3", "local-lvm", "ceph-storage", "nfs-templates"):
            assert name in out
        storages = requests.get(
            f"http://127.0.0.1:{port}/api/v1/storages?page_size=100", headers=headers, timeout=10
        ).json()
        for s in storages["data"]["list"]:
            assert f"{s['id']:<11}{s['storage_name']}" in out  # the table shows real ids
        agents = requests.get(f"http://127.0.0.1:{port}/api/v1/agents", headers=headers, timeout=10).json()
        assert [a["live"] for a in agents["data"]["list"]] == [True, True, True]
        # Plain HTTP is the guide's, on loopback; the agents speak HTTPS, and the banner says so.
        assert all(a["url"].startswith("https://127.0.0.1:") for a in agents["data"]["list"])
        assert "plain HTTP on loopback for the guide's examples; agents use" in out
        assert f"(HTTPS, CA {demo_dir.resolve() / 'pvesim' / 'ca.pem'})" in out
        # The dashboard's login link, and the page it opens.
        link = f"http://127.0.0.1:{port}/ui/?token={token}"
        assert f"  dashboard     {link}\n" in out
        page = requests.get(link, timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
        # The database holds the PVE token secret: the demo's state is its user's alone.
        assert stat.S_IMODE(demo_dir.stat().st_mode) == 0o700
        secrets = ["coordinator.db", "ticket-signing.key", "agent-credential.key", "admin.token"]
        secrets += [f"agents/{node}/credential" for node in ("pve-node1", "pve-node2", "pve-node3")]
        secrets += [p.name for p in demo_dir.glob("coordinator.db-*")]
        assert {name: stat.S_IMODE((demo_dir / name).stat().st_mode) for name in secrets} == dict.fromkeys(
            secrets, 0o600
        )
        _an_agent_killed_is_started_again(proc, port, headers, log)
    finally:
        children, everything = _stop(proc)
    assert len(children) == 5  # emulator, coordinator, three agents
    time.sleep(0.5)
    assert not [c for c in everything if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert "stopping the demo" in log.read_text()

    # A rerun reuses the state: same token, same cluster id, nothing registered twice.
    proc = _start(demo_dir, port, log)
    try:
        _wait_ready(port, proc, log)
        assert (demo_dir / "admin.token").read_text().strip() == token
        clusters = requests.get(
            f"http://127.0.0.1:{port}/api/v1/clusters", headers=headers, timeout=10
        ).json()
        assert clusters["data"]["total"] == 1
    finally:
        _stop(proc)

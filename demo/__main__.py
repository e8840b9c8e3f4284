"""`make demo`: the whole system on loopback, in the foreground, until Ctrl-C or SIGTERM.

Environment: PVESPHERE_DEMO_DIR (default .demo; all state lives there and reruns
reuse it) and PVESPHERE_PORT (the coordinator's plain-HTTP port on loopback, default 8080).

Every link but one speaks TLS, with certificates from the emulated cluster's CA: the
agents serve HTTPS only and reach the coordinator on its HTTPS port (8443, or a free one).
The one exception is the coordinator's plain-HTTP listener on loopback, for the guide's
curl examples.

The coordinator and the agents are kept running as their systemd units keep them
(``Restart=on-failure``, ``RestartSec=3``): one that crashes or is killed (SIGKILL, a
non-zero exit) is started again 3 s later, so the demo shows what a production node does
after such a fault (a copy resumes, an import is re-driven); one stopped cleanly (SIGTERM,
exit 0) stays stopped, as systemd leaves it. The emulator stands for PVE itself: when it
exits, the demo stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from demo.sample_vm import NODE, VMID, ensure_sample_vm
from demo.sample_volume import VOLUME, ensure_sample_volume
from demo.stack import Proc, Stack, StackError, StackSettings, free_port, http_json, port_is_free

# As the units' RestartSec.
RESTART_AFTER = 3.0
# Ends that systemd's Restart=on-failure counts as clean: exit 0 and these signals.
CLEAN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


def _follow(paths: list[Path], stop: threading.Event) -> None:
    """Print new lines of every log file as they arrive (like `tail -F` on all of them)."""
    files = {}
    for p in paths:
        f = open(p, errors="replace")  # noqa: SIM115
        f.seek(0, os.SEEK_END)
        files[p] = f
    while not stop.is_set():
        quiet = True
        for f in files.values():
            for line in f.readlines():
                quiet = False
                sys.stdout.write(line)
        sys.stdout.flush()
        if quiet:
            stop.wait(0.3)


def _table(stack: Stack) -> str:
    token = stack.admin_token
    _, clusters = http_json("GET", stack.api + "/clusters?page_size=100", token)
    _, nodes = http_json("GET", stack.api + "/nodes?page_size=100", token)
    _, storages = http_json("GET", stack.api + "/storages?page_size=100", token)
    _, agents = http_json("GET", stack.api + "/agents?page_size=100", token)
    live = {a["node_id"]: a for a in agents["data"]["list"]}
    out = []
    out.append("")
    out.append("pvesphere-templates demo is up")
    out.append(f"  API           {stack.api}   (OpenAPI: {stack.api}/openapi.json)")
    out.append("                plain HTTP on loopback for the guide's examples; agents use")
    out.append(f"                {stack.coordinator_https_url}/api/v1 (HTTPS, CA {stack.ca_file})")
    out.append(f"  admin token   {token}")
    out.append(f"                (also in {stack.base / 'admin.token'})")
    out.append(f"  dashboard     {stack.coordinator_url}/ui/?token={token}")
    out.append("                (a login link: the page moves the token out of the address bar)")
    out.append(f"  PVE emulator  {stack.pve_token()['api_url']}   (state in {stack.pvesim_dir})")
    out.append("")
    out.append(f"  {'CLUSTER ID':<11}{'NAME':<14}{'PVE':<8}NODES")
    for c in clusters["data"]["list"]:
        out.append(f"  {c['id']:<11}{c['cluster_name']:<14}{c['pve_version']:<8}{c['node_count']}")
    out.append("")
    out.append(f"  {'NODE ID':<11}{'NAME':<14}{'STATUS':<9}AGENT")
    for n in sorted(nodes["data"]["list"], key=lambda n: n["id"]):
        a = live.get(n["id"])
        agent = f"{a['url']} ({'live' if a['live'] else 'not live'})" if a else "none"
        out.append(f"  {n['id']:<11}{n['node_name']:<14}{n['status']:<9}{agent}")
    out.append("")
    out.append(f"  {'STORAGE ID':<11}{'NAME':<15}{'TYPE':<8}{'SHARED':<8}{'NODE':<11}CONTENT")
    for s in sorted(storages["data"]["list"], key=lambda s: s["id"]):
        out.append(
            f"  {s['id']:<11}{s['storage_name']:<15}{s['type']:<8}{'yes' if s['shared'] else 'no':<8}"
            f"{s['node_name']:<11}{s['content']}"
        )
    out.append("")
    out.append("  Try it:")
    out.append(f"    export TOKEN=$(cat {stack.base / 'admin.token'})")
    out.append(f'    curl -s -H "Authorization: Bearer $TOKEN" {stack.api}/storages?shared=true')
    out.append("")
    out.append(f"  Logs follow (also in {stack.base / 'logs'}); Ctrl-C stops everything.")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run the PVE emulator (3 nodes), one agent per node and the coordinator "
        "(SQLite) on loopback, in the foreground. Reruns reuse the state directory. Agents "
        "speak HTTPS only; the coordinator also serves plain HTTP on loopback for the guide.",
        epilog="Environment: PVESPHERE_DEMO_DIR (default .demo), PVESPHERE_PORT (default 8080).",
    )
    parser.parse_args(argv)
    base = Path(os.environ.get("PVESPHERE_DEMO_DIR", ".demo"))
    port = int(os.environ.get("PVESPHERE_PORT", "8080"))
    if not port_is_free(port):
        print(f"port {port} is in use: stop what uses it or set PVESPHERE_PORT", file=sys.stderr)
        return 1
    settings = StackSettings(base_dir=base, coordinator_port=port)
    # The emulator, the coordinator's HTTPS listener and the agents have fixed default
    # ports; take free ones if those are busy.
    if not port_is_free(settings.emulator_port):
        settings.emulator_port = free_port()
    if not port_is_free(settings.coordinator_tls_port):
        settings.coordinator_tls_port = free_port()
    while not all(port_is_free(settings.first_agent_port + i) for i in range(settings.nodes)):
        settings.first_agent_port = free_port()
    stack = Stack(settings)

    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"starting the demo in {base.resolve()} ...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"demo failed to start: {exc}", file=sys.stderr)
        return 1
    try:
        if ensure_sample_vm(stack.pvesim_dir, stack.base):
            print(
                f"made VM {VMID} on {NODE} (stopped, snapshot golden) for the README's examples", flush=True
            )
    except (OSError, RuntimeError, ValueError) as exc:  # (urllib's errors are OSErrors)
        print(f"VM {VMID} for the README's examples not made: {exc}", file=sys.stderr)
    try:
        if ensure_sample_volume(stack.pvesim_dir):
            print(f"placed the import volume {VOLUME} on {NODE} for the README's examples", flush=True)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"import volume {VOLUME} for the README's examples not placed: {exc}", file=sys.stderr)
    print(_table(stack), flush=True)
    logs = sorted((stack.base / "logs").glob("*.log"))
    follower = threading.Thread(target=_follow, args=(logs, stopping), daemon=True)
    follower.start()
    down: dict[str, float] = {}  # a crashed service's name -> when it went down
    try:
        while not stopping.is_set():
            if stack.emulator is not None and not stack.emulator.running:
                print("the PVE emulator exited; stopping the demo", file=sys.stderr)
                break
            try:
                _keep_services_up(stack, down, stopping)
            except StackError as exc:
                print(f"{exc}; stopping the demo", file=sys.stderr)
                break
            stopping.wait(1)
    finally:
        print("stopping the demo ...", flush=True)
        stack.stop()
        time.sleep(0.3)
    return 0


def _crashed(proc: Proc) -> bool:
    """Ended in a way systemd's Restart=on-failure restarts (not exit 0 or a clean signal)."""
    assert proc.popen is not None
    code = proc.popen.returncode
    return code != 0 and -code not in CLEAN_SIGNALS


def _keep_services_up(stack: Stack, down: dict[str, float], stopping: threading.Event) -> None:
    """Start again, RESTART_AFTER seconds after it ended, a coordinator or agent that crashed.
    ``down``: each such service's time of going down (-1: stopped cleanly, left so)."""
    services: dict[str, Proc | None] = {"coordinator": stack.coordinator}
    services.update({f"agent-{node}": proc for node, proc in stack.agents.items()})
    for name, proc in services.items():
        if proc is None or proc.running or down.get(name, 0.0) < 0:
            continue
        if name not in down:
            assert proc.popen is not None
            code = proc.popen.returncode
            if not _crashed(proc):
                print(f"{name} stopped (exit {code}); as under systemd it stays stopped", file=sys.stderr)
                down[name] = -1.0
                continue
            print(
                f"{name} ended (exit {code}); starting it again in {RESTART_AFTER:g} s "
                "(as its systemd unit would)",
                file=sys.stderr,
                flush=True,
            )
            down[name] = time.monotonic()
        if time.monotonic() - down[name] < RESTART_AFTER or stopping.is_set():
            continue
        proc.stop()  # (closes its log file; the new process appends to the same one)
        if name == "coordinator":
            stack.start_coordinator()
        else:
            stack.start_agent(name.removeprefix("agent-"))
        del down[name]
        print(f"{name} is running again", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

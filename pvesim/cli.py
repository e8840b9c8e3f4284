"""`pvesim` command line: serve a cluster, manage API tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from pvesim.auth import DEFAULT_TOKEN, AccessStore
from pvesim.faults import FaultRegistry
from pvesim.state import Cluster
from pvesim.tasks import TaskManager
from pvesim.tls import ensure_certificates
from shared.tls import server_context

log = logging.getLogger("pvesim")


def _write_json(path: Path, data: dict[str, object], mode: int = 0o644) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def prepare_state(
    state_dir: Path, cluster_name: str, nodes: int, host: str = "127.0.0.1"
) -> tuple[Cluster, AccessStore]:
    """Create the cluster on first start; certificates, token and pvesh wrappers once.

    The server certificate names ``host`` too: clients (the pvesh shim) connect to it.
    """
    if Cluster.initialise(state_dir, cluster_name, nodes):
        log.info("created cluster '%s' with %d nodes in %s", cluster_name, nodes, state_dir)
    access = AccessStore(state_dir)
    access.initialise()
    if DEFAULT_TOKEN not in access.data().get("tokens", {}):
        user, name = DEFAULT_TOKEN.split("!")
        access.add_token(user, name, privsep=False)
    cluster = Cluster(state_dir)
    ensure_certificates(cluster.state_dir, cluster.cluster_name, [host])
    cluster.write_pvesh_wrappers()
    return cluster, access


def write_token_file(cluster: Cluster, access: AccessStore, host: str, port: int, pvesh_socket: str) -> None:
    token = access.data()["tokens"][DEFAULT_TOKEN]
    shown = f"[{host}]" if ":" in host else host
    _write_json(
        cluster.state_dir / "api-token.json",
        {
            "token_id": DEFAULT_TOKEN,
            "secret": token["value"],
            "api_url": f"https://{shown}:{port}",
            "ca_file": str(cluster.state_dir / "ca.pem"),
            # The pvesh shim's way in (pvesim/pvesh.py): an abstract Unix socket of this run.
            "pvesh_socket": pvesh_socket,
        },
        mode=0o600,
    )


async def open_pvesh_socket(runner: web.BaseRunner) -> str:
    """Serve the API on the pvesh shim's socket too; its name. Abstract (no file to clean up,
    no path to outgrow sun_path's 108 bytes), named afresh per run; every request on it
    still carries the root secret."""
    name = f"pvesim-{secrets.token_hex(12)}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + name)
    await web.SockSite(runner, unix).start()
    return name


async def serve(args: argparse.Namespace) -> int:
    from pvesim.server import build_app

    state_dir = Path(args.state_dir).resolve()
    cluster, access = prepare_state(state_dir, args.cluster_name, args.nodes, args.host)
    # Clients wait for this file: it must not name the port of an earlier run.
    (cluster.state_dir / "api-token.json").unlink(missing_ok=True)
    tasks = TaskManager(cluster.state_dir, cluster.nodes)
    faults = FaultRegistry()
    tasks.before_worker = faults.check_task
    app = build_app(cluster, tasks, access, faults)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_ctx = server_context(state_dir / "tls" / "server.pem", state_dir / "tls" / "server-key.pem")
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ssl_ctx)
    await site.start()
    port = args.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    write_token_file(cluster, access, args.host, port, await open_pvesh_socket(runner))
    log.info("pvesim '%s' listening on https://%s:%d", cluster.cluster_name, args.host, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await tasks.shutdown()
    await runner.cleanup()
    return 0


def token_add(args: argparse.Namespace) -> int:
    access = AccessStore(Path(args.state_dir))
    if not access.path.exists():
        print(f"no pvesim state in {args.state_dir} (run 'pvesim serve' first)", file=sys.stderr)
        return 1
    try:
        secret = access.add_token(args.userid, args.tokenid, privsep=bool(args.privsep))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "full-tokenid": f"{args.userid}!{args.tokenid}",
                "info": {"privsep": args.privsep},
                "value": secret,
            },
            indent=1,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvesim", description="Proxmox VE 9 cluster emulator")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the emulated cluster's API (HTTPS)")
    p.add_argument("--state-dir", required=True, help="where the cluster lives (created if empty)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8006, help="port (8006; 0 picks a free one)")
    p.add_argument("--cluster-name", default="pve-demo", help="name of a new cluster (pve-demo)")
    p.add_argument("--nodes", type=int, default=3, help="node count of a new cluster (3)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="debug logs every request, info every task start/end",
    )
    p.set_defaults(func=lambda a: asyncio.run(serve(a)))

    t = sub.add_parser("token", help="manage API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    ta = tsub.add_parser("add", help="add an API token and print its secret")
    ta.add_argument("--state-dir", required=True)
    ta.add_argument("userid", help="USER@REALM, e.g. root@pam")
    ta.add_argument("tokenid", help="token name, e.g. automation")
    ta.add_argument("--privsep", type=int, choices=[0, 1], default=1)
    ta.set_defaults(func=token_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "info")
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

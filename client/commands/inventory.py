"""`clusters`, `nodes`, `storages`, `agents`: where templates can go and who serves them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from client import text
from client.commands.common import Commands, paging, show_page
from client.exit_codes import Exit
from client.lookup import cluster_id, node_ids
from client.output import Output

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api


def add(commands: Commands) -> None:
    paging(commands.command("clusters", "list the registered Proxmox clusters", clusters))

    p = commands.command("nodes", "list the nodes (the ids --sync and clone take)", nodes)
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    paging(p)

    p = commands.command("storages", "list the storages (the ids upload --storage takes)", storages)
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    p.add_argument("--node", help="only the storages this node sees (id or name)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--shared", action="store_true", default=None, help="only shared storages")
    kind.add_argument("--local", dest="shared", action="store_false", help="only local storages")
    paging(p)

    p = commands.command("agents", "list the node agents, live or not", agents)
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    live = p.add_mutually_exclusive_group()
    live.add_argument("--live", action="store_true", default=None, help="only live agents")
    live.add_argument("--silent", dest="live", action="store_false", help="only agents not heard from")
    paging(p)


async def _cluster(api: Api, args: argparse.Namespace) -> int | None:
    return await cluster_id(api, args.cluster) if args.cluster else None


async def clusters(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns = text.columns(
        "ID=id NAME=cluster_name API_URL=api_url PVE=pve_version NODES=node_count "
        "STORAGES=storage_count LAST_READ=last_sync_at ERROR=last_sync_error"
    )
    await show_page(api, out, "/clusters", args, columns)
    return Exit.OK


async def nodes(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns = text.columns(
        "ID=id NAME=node_name CLUSTER=cluster_name ADDRESS=ip_address STATUS=status AGENT=agent",
        agent=lambda r: "live" if r["agent_live"] else "silent",
    )
    await show_page(api, out, "/nodes", args, columns, cluster_id=await _cluster(api, args))
    return Exit.OK


async def storages(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns = text.columns(
        "ID=id NAME=storage_name TYPE=type SHARED=shared NODE=node_name CONTENT=content "
        "AVAIL=avail TOTAL=total",
        avail=lambda r: text.size(r["avail"]),
        total=lambda r: text.size(r["total"]),
    )
    cluster = await _cluster(api, args)
    node = None if args.node is None else (await node_ids(api, cluster, [args.node]))[0]
    await show_page(
        api, out, "/storages", args, columns, cluster_id=cluster, node_id=node, shared=args.shared
    )
    return Exit.OK


async def agents(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns = text.columns(
        "ID=id NODE=node_name CLUSTER=cluster_name URL=url VERSION=version LIVE=live "
        "LAST_HEARTBEAT=last_heartbeat_at PVE=pve STAGING_FREE=staging_free_bytes",
        pve=lambda r: "ok" if r["pve_ok"] else r["pve_error"],
        staging_free_bytes=lambda r: text.size(r["staging_free_bytes"]),
    )
    await show_page(api, out, "/agents", args, columns, cluster_id=await _cluster(api, args), live=args.live)
    return Exit.OK

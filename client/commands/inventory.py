"""`clusters`, `nodes`, `storages`, `agents`: where templates can go and who serves them."""

from __future__ import annotations

import argparse
from typing import Any

from client import text
from client.api import Api
from client.commands.common import paging, show_page
from client.exit_codes import Exit
from client.lookup import cluster_id
from client.output import Output


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("clusters", parents=[common], help="list the registered Proxmox clusters")
    paging(p)
    p.set_defaults(run=clusters)

    p = sub.add_parser("nodes", parents=[common], help="list the nodes (the ids --sync and clone take)")
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    paging(p)
    p.set_defaults(run=nodes)

    p = sub.add_parser(
        "storages", parents=[common], help="list the storages (the ids upload --storage takes)"
    )
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    p.add_argument("--node", type=int, help="only the storages this node id sees")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--shared", action="store_true", default=None, help="only shared storages")
    kind.add_argument("--local", dest="shared", action="store_false", help="only local storages")
    paging(p)
    p.set_defaults(run=storages)

    p = sub.add_parser("agents", parents=[common], help="list the node agents, live or not")
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    live = p.add_mutually_exclusive_group()
    live.add_argument("--live", action="store_true", default=None, help="only live agents")
    live.add_argument("--silent", dest="live", action="store_false", help="only agents not heard from")
    paging(p)
    p.set_defaults(run=agents)


async def _cluster(api: Api, args: argparse.Namespace) -> int | None:
    return await cluster_id(api, args.cluster) if args.cluster else None


async def clusters(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns: list[text.Column] = [
        ("ID", lambda r: r["id"]),
        ("NAME", lambda r: r["cluster_name"]),
        ("API URL", lambda r: r["api_url"]),
        ("PVE", lambda r: r["pve_version"]),
        ("NODES", lambda r: r["node_count"]),
        ("STORAGES", lambda r: r["storage_count"]),
        ("LAST READ", lambda r: r["last_sync_at"]),
        ("ERROR", lambda r: r["last_sync_error"]),
    ]
    await show_page(api, out, "/clusters", args, columns)
    return Exit.OK


async def nodes(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns: list[text.Column] = [
        ("ID", lambda r: r["id"]),
        ("NAME", lambda r: r["node_name"]),
        ("CLUSTER", lambda r: r["cluster_name"]),
        ("ADDRESS", lambda r: r["ip_address"]),
        ("STATUS", lambda r: r["status"]),
        ("AGENT", lambda r: "live" if r["agent_live"] else "silent"),
    ]
    await show_page(api, out, "/nodes", args, columns, cluster_id=await _cluster(api, args))
    return Exit.OK


async def storages(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns: list[text.Column] = [
        ("ID", lambda r: r["id"]),
        ("NAME", lambda r: r["storage_name"]),
        ("TYPE", lambda r: r["type"]),
        ("SHARED", lambda r: r["shared"]),
        ("NODE", lambda r: r["node_name"]),
        ("CONTENT", lambda r: r["content"]),
        ("AVAIL", lambda r: text.size(r["avail"])),
        ("TOTAL", lambda r: text.size(r["total"])),
    ]
    await show_page(
        api,
        out,
        "/storages",
        args,
        columns,
        cluster_id=await _cluster(api, args),
        node_id=args.node,
        shared=args.shared,
    )
    return Exit.OK


async def agents(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns: list[text.Column] = [
        ("ID", lambda r: r["id"]),
        ("NODE", lambda r: r["node_name"]),
        ("CLUSTER", lambda r: r["cluster_name"]),
        ("URL", lambda r: r["url"]),
        ("VERSION", lambda r: r["version"]),
        ("LIVE", lambda r: r["live"]),
        ("LAST HEARTBEAT", lambda r: r["last_heartbeat_at"]),
        ("PVE", lambda r: "ok" if r["pve_ok"] else r["pve_error"]),
        ("STAGING FREE", lambda r: text.size(r["staging_free_bytes"])),
    ]
    await show_page(api, out, "/agents", args, columns, cluster_id=await _cluster(api, args), live=args.live)
    return Exit.OK

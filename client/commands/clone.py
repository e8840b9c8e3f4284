"""`clone`: a VM from a template on a node; `resolve`: the VMID to clone on a node."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from client import text
from client.commands.common import Commands
from client.exit_codes import Exit
from client.lookup import cluster_id, node_ids, storage_name
from client.output import Output
from client.work import Item, Work

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api


def add(commands: Commands) -> None:
    p = commands.command("clone", "make a VM from a template on a node (linked where the storage can)", clone)
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.add_argument("--node", required=True, help="node id or name")
    p.add_argument("--name", required=True, help="the new VM's name")
    p.add_argument("--vmid", type=int, help="default: the next free one")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--full", action="store_true", default=None, help="a full copy")
    kind.add_argument(
        "--linked", dest="full", action="store_false", help="a linked clone (refused where impossible)"
    )
    p.add_argument("--version", type=int, help="default: the current version")
    p.add_argument(
        "--target-storage", help="full clones: the storage the copy goes to, by name (local-lvm) or id"
    )
    p.add_argument("--wait", action="store_true", help="follow the clone to its end")

    p = commands.command("resolve", "the VMID to clone a template from on a node", resolve)
    p.add_argument("--cluster", required=True, help="cluster id or name")
    p.add_argument("--name", required=True, help="the template's name")
    p.add_argument("--node", required=True, help="the node's name")
    p.add_argument("--version", type=int, help="default: the current version")


def _lines(d: Mapping[str, Any]) -> list[str]:
    how = "linked" if d["linked"] else "full"
    head = (
        f"clone {d['clone_id']} {d['name']}: {d['status']} on {d['node']['node_name']}, "
        f"vmid {text.cell(d['vmid'])} ({how}, template {d['template_id']} version {d['version']})"
    )
    return [head + (f": {d['error_message']}" if d.get("error_message") else "")]


async def clone(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    """Make a VM from a template on a node, linked where the storage can. A node without a
    copy of a local-storage template gets one first (a sync task), then the clone; --wait
    follows it to its end."""
    (node,) = await node_ids(api, None, [args.node])
    target = None if args.target_storage is None else await storage_name(api, args.target_storage)
    body = {
        "node_id": node,
        "name": args.name,
        "vmid": args.vmid,
        "full": args.full,
        "version": args.version,
        "target_storage": target,
    }
    data = await api.call(
        "POST", f"/templates/{args.template}/clone", body={k: v for k, v in body.items() if v is not None}
    )
    if not args.wait:
        out.result(data, _lines)
        return Exit.OK
    clone_id = data["clone_id"]
    work = Work([Item("clone", clone_id, f"{data['node']['node_name']} clone {data['name']}")])
    work.apply({"kind": "clone", "id": clone_id, **data})

    async def snapshot() -> list[Mapping[str, Any]]:
        return [{"kind": "clone", "id": clone_id, **await api.get(f"/clones/{clone_id}")}]

    from client.follow import watch  # rich and the events stream: only when waiting

    await watch(api, out, work, snapshot, {"template_id": args.template, "kind": "clone"})
    final = await api.get(f"/clones/{clone_id}")
    out.result(final, _lines)
    return Exit.OK if final["status"] == "completed" else Exit.WORK_FAILED


async def resolve(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.get(
        "/templates/resolve",
        cluster_id=await cluster_id(api, args.cluster),
        name=args.name,
        node=args.node,
        version=args.version,
    )
    out.result(
        data,
        lambda d: text.fields(
            [
                ("vmid", d["vmid"]),
                ("node", f"{d['node_id']} {d['node_name']}"),
                ("template", d["template_id"]),
                ("version", d["version"]),
                ("storage", d["storage_name"]),
                ("status", d["status"]),
            ]
        ),
    )
    return Exit.OK

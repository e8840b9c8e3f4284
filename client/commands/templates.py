"""`templates list|show` and `versions list|create|activate|delete`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import text
from client.commands.common import Commands, paging, show_page
from client.commands.tasks import follow_tasks
from client.commands.upload import readable, send_image
from client.exit_codes import Exit
from client.lookup import cluster_id, node_ids, split
from client.output import Output

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api

INSTANCE_COLUMNS = text.columns(
    "NODE=node_name VERSION=version VMID=vmid STORAGE=storage_name STATUS=status "
    "PRIMARY=is_primary SYNC=sync",
    sync=lambda i: f"{i['sync_progress']}%" if i.get("sync_progress") is not None else None,
)


def add(commands: Commands) -> None:
    templates = commands.group("templates", "list templates or show one")
    p = templates.command("list", "list templates, newest first", list_templates)
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    p.add_argument("--name", help="only names containing this text")
    paging(p)
    p = templates.command("show", "a template, its current upload and where it is", show_template)
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p = templates.command("sync", "copy a local-storage template to more nodes", sync_template)
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.add_argument("--nodes", required=True, help="node ids or names, comma-separated")
    p.add_argument("--wait", action="store_true", help="a bar per copy until each ends")
    p = templates.command(
        "delete", "delete a template (with --cascade: its VMs and images too)", delete_template
    )
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.add_argument("--cascade", action="store_true", help="also remove every node's VM and the stored images")

    versions = commands.group("versions", "a template's versions")
    versions.command("list", "the versions, newest first", list_versions).add_argument(
        "template", type=int, metavar="TEMPLATE_ID"
    )
    p = versions.command(
        "create", "upload the next version (rolled out to every node holding an earlier one)", create_version
    )
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.add_argument("file", type=Path, metavar="FILE", help="the disk image")
    p.add_argument("--description", default=None)
    p.add_argument(
        "--no-rollout",
        dest="rollout",
        action="store_false",
        help="import it on the storage's node only; sync it to others later",
    )
    p.add_argument("--wait", action="store_true", help="follow the import and the rollout to their end")
    for action, what, run in (
        ("activate", "make a version current (roll back or forward)", activate_version),
        ("delete", "remove a version's VMs and images on every node", delete_version),
    ):
        p = versions.command(action, what, run)
        p.add_argument("template", type=int, metavar="TEMPLATE_ID")
        p.add_argument("version", type=int, metavar="VERSION")


async def list_templates(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns = text.columns(
        "ID=id NAME=template_name CLUSTER=cluster_name VERSION=current_version STATUS=status "
        "CREATED=created_at DESCRIPTION=description",
        description=lambda r: r["description"].splitlines()[0] if r["description"] else "",
    )
    cluster = await cluster_id(api, args.cluster) if args.cluster else None
    await show_page(api, out, "/templates", args, columns, cluster_id=cluster, name=args.name)
    return Exit.OK


def _detail_lines(d: Mapping[str, Any]) -> list[str]:
    info = d.get("upload_info") or {}
    lines = text.fields(
        [
            ("template", f"{d['id']} {d['template_name']}"),
            ("cluster", f"{d['cluster_id']} {d['cluster_name']}"),
            ("current version", d.get("current_version")),
            ("description", d.get("description") or ""),
            ("file", f"{info.get('file_name')} ({text.size(info.get('file_size'))})" if info else None),
            (
                "storage",
                f"{info.get('storage_name')}{' (shared)' if info.get('is_shared') else ''}" if info else None,
            ),
            ("upload", f"{info.get('upload_id')} {info.get('status')}" if info else None),
        ]
    )
    instances = d.get("instances") or []
    if instances:
        lines += ["", *text.table(instances, INSTANCE_COLUMNS)]
    return lines


async def show_template(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.get(f"/templates/{args.template}/detail", include_instances=True)
    out.result(data, _detail_lines)
    return Exit.OK


async def sync_template(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    """Copy a local-storage template's current version to more nodes: one sync task per
    node. A node that already has it is skipped and said so; asking again for a node whose
    copy is under way gives the same task. --wait draws a bar per copy until each ends."""
    detail = await api.get(f"/templates/{args.template}")
    nodes = await node_ids(api, detail["cluster_id"], split(args.nodes))
    data = await api.call("POST", f"/templates/{args.template}/sync", body={"target_node_ids": nodes})
    for s in data["skipped"]:
        out.note(f"{s['node_name']}: skipped, {s['reason']}")
    if args.wait and data["sync_tasks"]:
        found = [await api.get(f"/templates/sync-tasks/{t['task_id']}") for t in data["sync_tasks"]]
        return await follow_tasks(api, out, found, args.template)
    out.result(
        data,
        lambda d: [
            f"sync task {t['task_id']} to {t['target_node_name']}: {t['status']}" for t in d["sync_tasks"]
        ],
    )
    return Exit.OK


async def delete_template(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    """Delete a template: hidden from lists, nothing removed from Proxmox; with --cascade,
    every node's VM and the stored images are removed too (it goes on by itself while a
    node cannot be reached: `templates show` says what is left)."""
    data = await api.call("DELETE", f"/templates/{args.template}", {"cascade": args.cascade})

    def lines(d: Mapping[str, Any]) -> list[str]:
        if "deleted" not in d:  # 202: the template, deleting
            return [f"template {d['id']}: {d['status']}; it finishes on its own (`templates show {d['id']}`)"]
        removed = (
            f" ({len(d['removed_vms'])} VMs, {d['removed_images']} images removed)" if d["cascade"] else ""
        )
        return [f"template {d['id']}: deleted{removed}"]

    out.result(data, lines)
    return Exit.OK


async def list_versions(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.get(f"/templates/{args.template}/versions")
    columns = text.columns(
        "VERSION=version STATUS=status FILE=file_name SIZE=file_size NODES=instances CLONES=clones "
        "CREATED=created_at",
        version=lambda v: f"{v['version']}{' *' if v['is_current'] else ''}",
        file_size=lambda v: text.size(v["file_size"]),
    )
    out.result(data, lambda d: [*text.table(d["list"], columns), "(* current)"] if d["list"] else ["(none)"])
    return Exit.OK


async def create_version(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    file = readable(args.file)
    fields = {"rollout": "true" if args.rollout else "false"}
    if args.description is not None:
        fields["description"] = args.description
    return await send_image(api, out, f"/templates/{args.template}/versions", fields, file, args.wait)


async def activate_version(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.call("POST", f"/templates/{args.template}/versions/{args.version}/activate")
    out.result(
        data,
        lambda d: [
            f"template {d['template_id']}: version {d['current_version']} is current "
            f"(was {d['previous_version']})"
        ],
    )
    return Exit.OK


async def delete_version(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.call("DELETE", f"/templates/{args.template}/versions/{args.version}")

    def lines(d: Mapping[str, Any]) -> list[str]:
        head = f"template {d['template_id']} version {d['version']}: "
        if d["deleted"]:
            shown = [head + f"deleted ({len(d['removed_vms'])} VMs, {d['removed_images']} images removed)"]
        else:
            shown = [head + f"deleting; it finishes on its own ({d.get('reason') or 'parts are left'})"]
        shown += [f"  left: {r['what']} on {r['node_name']}" for r in d.get("remaining") or []]
        return shown

    out.result(data, lines)
    return Exit.OK

"""`templates list|show` and `versions list|create|activate|delete`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from client import text
from client.api import Api
from client.commands.common import paging, show_page
from client.commands.upload import readable, send_image
from client.exit_codes import Exit
from client.lookup import cluster_id
from client.output import Output

INSTANCE_COLUMNS: list[text.Column] = [
    ("NODE", lambda i: i["node_name"]),
    ("VERSION", lambda i: i["version"]),
    ("VMID", lambda i: i["vmid"]),
    ("STORAGE", lambda i: i["storage_name"]),
    ("STATUS", lambda i: i["status"]),
    ("PRIMARY", lambda i: i["is_primary"]),
    ("SYNC", lambda i: f"{i['sync_progress']}%" if i.get("sync_progress") is not None else None),
]


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    templates = sub.add_parser("templates", parents=[common], help="list templates or show one")
    tsub = templates.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tsub.add_parser("list", parents=[common], help="list templates, newest first")
    p.add_argument("--cluster", help="only this cluster's (id or name)")
    p.add_argument("--name", help="only names containing this text")
    paging(p)
    p.set_defaults(run=list_templates)
    p = tsub.add_parser("show", parents=[common], help="a template, its current upload and where it is")
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.set_defaults(run=show_template)

    versions = sub.add_parser("versions", parents=[common], help="a template's versions")
    vsub = versions.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = vsub.add_parser("list", parents=[common], help="the versions, newest first")
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.set_defaults(run=list_versions)
    p = vsub.add_parser(
        "create",
        parents=[common],
        help="upload the next version (rolled out to every node holding an earlier one)",
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
    p.set_defaults(run=create_version)
    p = vsub.add_parser("activate", parents=[common], help="make a version current (roll back or forward)")
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.add_argument("version", type=int, metavar="VERSION")
    p.set_defaults(run=activate_version)
    p = vsub.add_parser("delete", parents=[common], help="remove a version's VMs and images on every node")
    p.add_argument("template", type=int, metavar="TEMPLATE_ID")
    p.add_argument("version", type=int, metavar="VERSION")
    p.set_defaults(run=delete_version)


async def list_templates(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    columns: list[text.Column] = [
        ("ID", lambda r: r["id"]),
        ("NAME", lambda r: r["template_name"]),
        ("CLUSTER", lambda r: r["cluster_name"]),
        ("VERSION", lambda r: r["current_version"]),
        ("STATUS", lambda r: r["status"]),
        ("CREATED", lambda r: r["created_at"]),
        ("DESCRIPTION", lambda r: r["description"].splitlines()[0] if r["description"] else ""),
    ]
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


async def list_versions(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    data = await api.get(f"/templates/{args.template}/versions")
    columns: list[text.Column] = [
        ("VERSION", lambda v: f"{v['version']}{' *' if v['is_current'] else ''}"),
        ("STATUS", lambda v: v["status"]),
        ("FILE", lambda v: v["file_name"]),
        ("SIZE", lambda v: text.size(v["file_size"])),
        ("NODES", lambda v: v["instances"]),
        ("CLONES", lambda v: v["clones"]),
        ("CREATED", lambda v: v["created_at"]),
    ]
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

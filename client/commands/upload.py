"""`upload`: a disk image streamed from disk to the coordinator with a byte bar, and with
``--wait`` the import and every sync task it started followed to their end. `import-url`:
the same for an image the import node's agent downloads from an https URL; `import-volume`:
for a volume on a PVE storage (an import volume, a VM's disk image) the node's agent copies.

`versions create` sends a new version the same way (:func:`send_image`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import text
from client.answers import ApiFailure
from client.commands.common import Commands
from client.exit_codes import Exit, UsageError
from client.lookup import cluster_id, node_ids, split, storage_id
from client.output import Output
from client.work import Item, Work

if TYPE_CHECKING:  # aiohttp is imported when a command runs, not for --help
    from client.api import Api


class UnreadableFile(UsageError):
    """The image to upload is not a readable file."""


FORMATS = ("qcow2", "raw", "vmdk")
# How long `import-url` and `import-volume` wait for their answer: the agent downloads (or
# copies) the whole image first.
DOWNLOAD_ANSWER_SECONDS = 3600.0


def add(commands: Commands) -> None:
    what = "upload a disk image as a new template (with --wait: until imported and synced)"
    p = commands.command("upload", what, upload)
    p.add_argument("file", type=Path, metavar="FILE", help="the disk image")
    _template_options(p)
    p.add_argument(
        "--resumable",
        action="store_true",
        help="send it with the tus protocol: an interrupted upload goes on from where it stopped "
        "(retried here; or later by running the same command with --resume ID)",
    )
    p.add_argument(
        "--resume",
        type=int,
        metavar="ID",
        help="go on with resumable upload ID of this file (printed when it started)",
    )
    what = "a new template from an image the agent downloads from an https URL (checked by its checksum)"
    p = commands.command("import-url", what, import_url)
    p.add_argument(
        "image_url",
        metavar="URL",
        help="https URL of the image (its host must be on the agents' download_hosts)",
    )
    sums = p.add_mutually_exclusive_group(required=True)
    sums.add_argument("--sha256", help="the image's published sha256 (hex)")
    sums.add_argument("--sha512", help="the image's published sha512 (hex)")
    p.add_argument(
        "--format", choices=FORMATS, help="the image's format (default: the URL's suffix; an .img needs it)"
    )
    _template_options(p)
    _answer_timeout(p, "the download")
    what = "a new template from a volume on a PVE storage: an import volume, or a stopped VM's disk image"
    p = commands.command("import-volume", what, import_volume)
    p.add_argument(
        "volume",
        metavar="VOLUME",
        help="PVE volume id: local:import/debian-13.qcow2 (import content, qcow2/raw/vmdk), "
        "local:100/vm-100-disk-0.qcow2 or local-lvm:vm-100-disk-0 (a stopped VM's disk)",
    )
    p.add_argument(
        "--node", required=True, help="node id or name whose storage holds it (shared: any that sees it)"
    )
    _template_options(p)
    _answer_timeout(p, "the copy")


def _answer_timeout(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=DOWNLOAD_ANSWER_SECONDS,
        help=f"seconds to wait for {what} to be checked and staged (default {DOWNLOAD_ANSWER_SECONDS:.0f})",
    )


def _template_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="the template's name (unique in its cluster)")
    p.add_argument("--cluster", required=True, help="cluster id or name")
    p.add_argument(
        "--storage",
        required=True,
        help="storage id, or name (a local storage with its node: local@pve-node1)",
    )
    p.add_argument("--description", default=None, help="free text shown with the template")
    p.add_argument(
        "--sync",
        metavar="NODES|all",
        help="local storage: also copy it to these nodes (ids or names, comma-separated), "
        "or to every node with a storage of the same name (all)",
    )
    p.add_argument("--wait", action="store_true", help="follow the import and the sync tasks to their end")


def readable(file: Path) -> Path:
    if not file.is_file():
        raise UnreadableFile(f"{file}: no such file")
    try:
        with open(file, "rb"):
            pass
    except OSError as exc:
        raise UnreadableFile(f"{file}: {exc.strerror}") from None
    return file


async def upload(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    """Stream FILE (.qcow2, .raw/.img, .vmdk) from disk to the coordinator, which imports it
    as a PVE template on the storage's node; with --sync, copies follow to other nodes.
    --wait follows the import and every copy to their end, one bar per node. --resumable
    sends it so that an interrupted upload goes on from where it stopped (retried at once;
    after a give-up, the same command with --resume ID goes on)."""
    file = readable(args.file)
    given = await _template_fields(api, args)
    fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in given.items()}
    if args.resumable or args.resume is not None:
        return await send_resumable(api, out, fields, file, args.wait, args.resume)
    return await send_image(api, out, "/templates/upload", fields, file, args.wait)


async def send_resumable(
    api: Api, out: Output, fields: Mapping[str, str], file: Path, wait: bool, resume: int | None
) -> Exit:
    """``file`` as a resumable upload (a new one, or ``resume``), then as send_image."""
    from client import resumable
    from client.progress import byte_bar

    upload_id = resume if resume is not None else await api.tus_create(fields, file)
    if resume is None:
        out.note(f"resumable upload {upload_id}: if it stops, run the same command with --resume {upload_id}")
    bar = byte_bar(f"upload {file.name}", file.stat().st_size, out.progress_stream, out.plain)
    try:
        await resumable.send(api, file, upload_id, bar, out.note)
    finally:
        bar.close()
    return await follow(api, out, await api.get(f"/uploads/{upload_id}"), wait)


async def import_url(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    """The import node's agent downloads URL (https; resumed if the connection breaks),
    checks it against --sha256 or --sha512, and it is imported as an upload is; with
    --sync, copies follow to other nodes. --wait follows the import and every copy."""
    body: dict[str, Any] = {"url": args.image_url, **await _template_fields(api, args)}
    for key in ("sha256", "sha512", "format"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    out.note(f"downloading {args.image_url} on the import node ...")
    return await _post_and_follow(api, out, args, "/templates/from-url", body)


async def import_volume(api: Api, args: argparse.Namespace, out: Output) -> Exit:
    """The agent of --node copies VOLUME (a PVE volume id: an import volume, or a stopped
    VM's disk image) into its staging, and it is imported as an upload is; with --sync,
    copies follow to other nodes. --wait follows the import and every copy."""
    fields = await _template_fields(api, args)
    [node] = await node_ids(api, fields["cluster_id"], [args.node])
    body: dict[str, Any] = {"volume": args.volume, "node_id": node, **fields}
    out.note(f"copying {args.volume} on node {args.node} ...")
    return await _post_and_follow(api, out, args, "/templates/from-volume", body)


async def _post_and_follow(
    api: Api, out: Output, args: argparse.Namespace, path: str, body: dict[str, Any]
) -> Exit:
    """POST ``body`` (sync_node_ids as "2,3" made a list) and follow what it started."""
    import aiohttp

    if "sync_node_ids" in body:
        body["sync_node_ids"] = [int(n) for n in body["sync_node_ids"].split(",")]
    timeout = aiohttp.ClientTimeout(total=args.timeout, sock_connect=30)
    data = await api.call("POST", path, body=body, timeout=timeout)
    return await follow(api, out, data, args.wait)


async def _template_fields(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """The new template's fields of an upload, a URL or a volume import (sync_node_ids as "2,3")."""
    cluster = await cluster_id(api, args.cluster)
    fields: dict[str, Any] = {
        "template_name": args.name,
        "cluster_id": cluster,
        "storage_id": await storage_id(api, cluster, args.storage),
    }
    if args.description is not None:
        fields["description"] = args.description
    if args.sync == "all":
        fields["auto_sync"] = True
    elif args.sync:
        fields["sync_node_ids"] = ",".join(map(str, await node_ids(api, cluster, split(args.sync))))
    return fields


async def send_image(
    api: Api, out: Output, path: str, fields: Mapping[str, str], file: Path, wait: bool
) -> Exit:
    """Upload ``file`` to ``path``; with ``wait``, follow what it started. The result is the
    API's answer (with --wait: its status and its sync tasks' as they ended)."""
    # rich, the events stream and aiohttp: imported when an upload runs, not for --help
    from client.progress import byte_bar

    bar = byte_bar(f"upload {file.name}", file.stat().st_size, out.progress_stream, out.plain)
    try:
        data = await api.upload(path, fields, file, bar.advance)
    finally:
        bar.close()
    return await follow(api, out, data, wait)


async def follow(api: Api, out: Output, data: Mapping[str, Any], wait: bool) -> Exit:
    """The upload's answer ``data``; with ``wait``, what it started followed to its end."""
    from client.follow import watch

    if not wait:
        out.result(data, _answer_lines)
        return Exit.OK
    work = Work(_items(data))
    await watch(
        api,
        out,
        work,
        lambda: _snapshot(api, data),
        {"template_id": data["template_id"], "kind": "upload,sync_task"},
    )
    final = _final(data, work)
    instances = []
    if not out.as_json:
        listing = await api.get(f"/templates/{data['template_id']}/instances", version=data["version"])
        instances = listing["instances"]
    out.result(final, lambda d: _final_lines(d, work, instances))
    return Exit.OK if work.succeeded else Exit.WORK_FAILED


def _items(data: Mapping[str, Any]) -> list[Item]:
    node = data["import_node"]["node_name"]
    items = [Item("upload", data["upload_id"], f"{node} import", status=data.get("status") or "uploaded")]
    items += [
        Item("sync_task", t["task_id"], f"{t['target_node_name']} sync #{t['task_id']}", status=t["status"])
        for t in data["sync_tasks"]
    ]
    return items


async def _snapshot(api: Api, data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The upload's import and its sync tasks as the API has them now, in the events' shape."""
    states: list[Mapping[str, Any]] = [await _import_state(api, data["template_id"], data["upload_id"])]
    for t in data["sync_tasks"]:
        task = await api.get(f"/templates/sync-tasks/{t['task_id']}")
        states.append({"kind": "sync_task", "id": task["task_id"], **task})
    return states


async def _import_state(api: Api, template_id: int, upload_id: int) -> Mapping[str, Any]:
    """The template's detail says how its current upload's import goes (and why it failed);
    a new version's upload is not current before it is imported: the versions list has it."""
    state: dict[str, Any] = {"kind": "upload", "id": upload_id}
    try:
        info = (await api.get(f"/templates/{template_id}/detail"))["upload_info"]
        if info and info["upload_id"] == upload_id:
            progress = 100 if info["status"] == "imported" else info["import_progress"]
            return {
                **state,
                "status": info["status"],
                "progress": progress,
                "error_message": info["error_message"],
            }
        versions = await api.get(f"/templates/{template_id}/versions")
    except ApiFailure as exc:
        if exc.status != 404:
            raise
        return {**state, "status": "failed", "error_message": str(exc)}  # the template is gone
    for v in versions["list"]:
        if v["upload_id"] == upload_id:
            return {**state, "status": v["status"]}
    return state


def _final(data: Mapping[str, Any], work: Work) -> dict[str, Any]:
    """The upload's answer with its import's and its sync tasks' final states (the shape
    the API's own wait=true answer has)."""
    upload = work.items[("upload", data["upload_id"])]
    return {
        **data,
        "status": upload.status,
        "error_message": upload.error,
        "sync_tasks": [
            {**t, "status": work.items[("sync_task", t["task_id"])].status} for t in data["sync_tasks"]
        ],
    }


def _answer_lines(d: Mapping[str, Any]) -> list[str]:
    lines = [
        f"template {d['template_id']} version {d['version']}: upload {d['upload_id']} {d['status']}, "
        f"importing on {d['import_node']['node_name']} ({d['storage_type']}"
        f"{', shared' if d['is_shared'] else ''})"
    ]
    lines += [f"sync task {t['task_id']} to {t['target_node_name']}: {t['status']}" for t in d["sync_tasks"]]
    return lines


def _final_lines(d: Mapping[str, Any], work: Work, instances: list[Mapping[str, Any]]) -> list[str]:
    head = f"template {d['template_id']} version {d['version']}: {d['status']}"
    lines = [head + (f": {d['error_message']}" if d.get("error_message") else "")]
    for t in d["sync_tasks"]:
        task = work.items[("sync_task", t["task_id"])]
        why = f": {task.error}" if task.error and not task.ok else ""
        lines.append(f"sync task {t['task_id']} to {t['target_node_name']}: {t['status']}{why}")
    if instances:
        lines += text.table(
            instances,
            text.columns("NODE=node_name VMID=vmid STORAGE=storage_name STATUS=status PRIMARY=is_primary"),
        )
    return lines

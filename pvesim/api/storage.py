"""Storage endpoints (pve-storage API2/Storage/Status.pm, Content.pm, Config.pm)."""

from __future__ import annotations

from typing import Any

from pvesim.api import Request, as_bool, route
from pvesim.errors import ApiError, die, param_error
from pvesim.state import Cluster
from pvesim.storage import parse_volume_id
from pvesim.tasks import TaskContext
from shared.pve_formats import split_list


def storage_info(
    req: Request, node: str, content: str | None, include_format: bool = False
) -> dict[str, dict[str, Any]]:
    """PVE::Storage::storage_info as seen from `node`."""
    ctypes = split_list(content) if content is not None else []
    info: dict[str, dict[str, Any]] = {}
    for sid, storage in req.cluster.storages.items():
        enabled = not storage.disabled and storage.available_on(node)
        if content is not None:
            if not any(c in storage.content for c in ctypes) or not enabled:
                continue
        entry: dict[str, Any] = {
            "type": storage.type,
            "total": 0,
            "avail": 0,
            "used": 0,
            "shared": 1 if storage.shared else 0,
            "content": ",".join(storage.content),
            "active": 0,
            "enabled": 1 if enabled else 0,
        }
        if enabled:
            if include_format:
                valid, _default = storage.formats
                entry["formats"] = {
                    "supported": sorted(valid),
                    "default": storage.default_format(),
                }
                entry["format"] = [dict.fromkeys(sorted(valid), 1), storage.default_format()]
            total, avail, used = storage.status(node)
            entry.update(total=total, avail=avail, used=used, active=1)
        info[sid] = entry
    return info


@route("GET", "/nodes/{node}/storage")
async def node_storage_index(req: Request, params: dict[str, str]) -> Any:
    node = params["node"]
    target = params.get("target")
    if target in (node, "localhost"):
        target = None
    info = storage_info(req, node, params.get("content"), as_bool(params.get("format")))
    if params.get("storage") and params["storage"] not in info:
        raise param_error({"storage": "No such storage."})
    res = []
    for sid in sorted(req.cluster.storages):
        data = info.get(sid)
        if data is None or not req.can(f"/storage/{sid}", ["Datastore.Audit"]):
            continue
        if params.get("storage") and params["storage"] != sid:
            continue
        storage = req.cluster.storages[sid]
        if as_bool(params.get("enabled")) and storage.disabled:
            continue
        if target:
            # only shared storages whose content both nodes can reach (the clone dialog)
            if not storage.shared or not storage.available_on(node):
                continue
            if not storage.available_on(target):
                continue
        if data["total"]:
            data["used_fraction"] = data["used"] / data["total"]
        res.append(dict(data, storage=sid))
    return res


@route("GET", "/nodes/{node}/storage/{storage}/status")
async def storage_status(req: Request, params: dict[str, str]) -> Any:
    req.check(f"/storage/{params['storage']}", ["Datastore.Audit", "Datastore.AllocateSpace"])
    data = storage_info(req, params["node"], None).get(params["storage"])
    if data is None:
        raise param_error({"storage": "No such storage."})
    return data


@route("GET", "/nodes/{node}/storage/{storage}/content")
async def storage_content(req: Request, params: dict[str, str]) -> Any:
    req.check(f"/storage/{params['storage']}", ["Datastore.Audit", "Datastore.AllocateSpace"])
    storage = req.cluster.storage(params["storage"])
    node = params["node"]
    ctypes = (
        [params["content"]]
        if params.get("content")
        else [
            "rootdir",
            "images",
            "vztmpl",
            "iso",
            "backup",
            "snippets",
            "import",
        ]
    )
    ctypes = [c for c in ctypes if c in storage.content]
    storage.check_enabled(node)
    vmid = int(params["vmid"]) if params.get("vmid") else None
    return await storage.list_volumes(node, vmid, ctypes)


def real_volume_id(storeid: str | None, volume: str) -> str:
    """Content.pm $real_volume_id: a volume name may omit the storage part."""
    if ":" in volume:
        parsed = parse_volume_id(volume)
        if not parsed:
            raise param_error({"volume": f"unable to parse volume ID '{volume}'\n"})
        if storeid and parsed[0] != storeid:
            raise param_error({"volume": f"storage ID mismatch ({parsed[0]} != {storeid})\n"})
        return volume
    if not storeid:
        raise param_error({"volume": "no storage specified - incomplete volume ID"})
    return f"{storeid}:{volume}"


@route("GET", "/nodes/{node}/storage/{storage}/content/{volume}")
async def volume_info(req: Request, params: dict[str, str]) -> Any:
    volid = real_volume_id(params.get("storage"), params["volume"])
    storage, volname = req.cluster.volume(volid)
    node = params["node"]
    path = storage.path(node, volname)
    try:
        si = await storage.size_info(node, volname)
    except FileNotFoundError:
        raise die(f"failed to stat '{path}'") from None
    if not si.format:
        raise die(f"volume_size_info on '{volid}' failed - no format")
    if not si.size:
        raise die(f"volume '{volid}' has size zero")
    return {"path": str(path), "size": si.size, "used": si.used, "format": si.format}


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
async def volume_delete(req: Request, params: dict[str, str]) -> Any:
    volid = real_volume_id(params.get("storage"), params["volume"])
    storage, volname = req.cluster.volume(volid)
    node = params["node"]
    vol = storage.parse_volname(volname)
    req.check(f"/storage/{storage.storeid}", ["Datastore.Allocate"])

    async def worker(ctx: TaskContext) -> None:
        await vdisk_free(req, node, volid, ctx.log)
        ctx.log(f"Removed volume '{volid}'")

    ident = (f"{vol.vmid}@" if vol.vmid is not None else "") + storage.storeid
    upid = req.fork_worker(node, "imgdel", ident, worker)
    delay = params.get("delay")
    if delay:
        try:
            await req.tasks.wait(upid, float(delay))
        except TimeoutError:
            return upid
        status = req.tasks.status_of(upid)
        if status == "OK" or status.startswith("WARNINGS"):
            return None
        raise die(status)
    return upid


async def volume_is_base_and_used(cluster: Cluster, node: str, volid: str) -> bool:
    """PVE::Storage::volume_is_base_and_used: a base volume whose name another volume of its
    storage names as its base (LVM-thin names none: always False there)."""
    storage, volname = cluster.volume(volid)
    vol = storage.parse_volname(volname)
    if not vol.is_base:
        return False
    for item in await storage.list_images(node, None):
        parsed = parse_volume_id(item["volid"])
        if not parsed:
            continue
        try:
            other = storage.parse_volname(parsed[1])
        except ApiError:
            continue
        if other.basename == vol.name and other.basevmid == vol.vmid:
            return True
    return False


async def vdisk_free(req: Request, node: str, volid: str, log: Any) -> None:
    """PVE::Storage::vdisk_free (base volumes still backing clones are kept)."""
    storage, volname = req.cluster.volume(volid)
    if await volume_is_base_and_used(req.cluster, node, volid):
        raise die(f"base volume '{volname}' is still in use by linked clones")
    await storage.free(node, volname, log)


@route("GET", "/storage")
async def storage_index(req: Request, params: dict[str, str]) -> Any:
    digest = req.cluster.storage_cfg_digest()
    res = []
    for sid, storage in req.cluster.storages.items():
        if not req.can(f"/storage/{sid}", ["Datastore.Audit"]):
            continue
        if params.get("type") and params["type"] != storage.type:
            continue
        res.append(dict(storage.api_config(req.local_node), digest=digest))
    return res


@route("GET", "/storage/{storage}")
async def storage_read(req: Request, params: dict[str, str]) -> Any:
    req.check(f"/storage/{params['storage']}", ["Datastore.Allocate"])
    storage = req.cluster.storage(params["storage"])
    return dict(storage.api_config(req.local_node), digest=req.cluster.storage_cfg_digest())

"""/version, /cluster/*, /nodes and /nodes/{node}/status (pve-manager API2/Cluster.pm,
API2/Nodes.pm, API2Tools.pm)."""

from __future__ import annotations

import time
from typing import Any

from pvesim import PVE_RELEASE, PVE_REPOID, PVE_VERSION, hostinfo
from pvesim.api import Request, route
from pvesim.api.qemu import vm_status
from pvesim.errors import die, param_error
from pvesim.tasks import split_token_user


def node_stats(req: Request, node: str) -> dict[str, Any]:
    """API2Tools::extract_node_stats from the node's (real, shared) host figures; callers
    without Sys.Audit on the node only learn its status."""
    cluster = req.cluster
    entry: dict[str, Any] = {"id": f"node/{node}", "node": node, "type": "node"}
    with_stats = req.can(f"/nodes/{node}", ["Sys.Audit"])
    mem = hostinfo.meminfo()
    rootfs = hostinfo.disk(cluster.state_dir)
    if cluster.online[node]:
        entry["status"] = "online"
        if with_stats:
            cpu, _wait = hostinfo.cpu_usage()
            entry.update(
                uptime=int(time.time() - cluster.boot_time[node]),
                cpu=cpu,
                mem=mem["used"],
                disk=rootfs["used"],
            )
    else:
        entry["status"] = "offline"
    entry["level"] = ""
    if with_stats:
        entry.update(maxcpu=hostinfo.cpu_count(), maxmem=mem["total"], maxdisk=rootfs["total"])
    return entry


@route("GET", "/version")
async def version(req: Request, params: dict[str, str]) -> Any:
    return {"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": PVE_REPOID}


@route("GET", "/cluster/status")
async def cluster_status(req: Request, params: dict[str, str]) -> Any:
    req.check("/", ["Sys.Audit"])
    cluster = req.cluster
    res: list[dict[str, Any]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "nodes": len(cluster.nodes),
            "version": int(cluster.config.get("config_version", len(cluster.nodes))),
            "name": cluster.cluster_name,
            "quorate": 1 if cluster.quorate else 0,
        }
    ]
    for node in cluster.nodes:
        info = cluster.node_info[node]
        res.append(
            {
                "type": "node",
                "id": f"node/{node}",
                "name": node,
                "nodeid": int(info["nodeid"]),
                "local": 1 if node == req.local_node else 0,
                "online": 1 if cluster.online[node] else 0,
                "ip": info.get("ip", "127.0.0.1"),
                "level": "",
            }
        )
    return res


@route("GET", "/cluster/resources")
async def cluster_resources(req: Request, params: dict[str, str]) -> Any:
    cluster = req.cluster
    typ = params.get("type")
    res: list[dict[str, Any]] = []
    if not typ or typ == "vm":
        for vmid in sorted(cluster.vmlist, key=str):
            # PVE lists only what the caller may audit (VM.Audit, Datastore.Audit, SDN.Audit)
            if not req.can(f"/vms/{vmid}", ["VM.Audit"]):
                continue
            node = cluster.vmlist[vmid]
            entry: dict[str, Any] = {
                "id": f"qemu/{vmid}",
                "vmid": vmid,
                "node": node,
                "type": "qemu",
                "status": "unknown",
            }
            try:
                conf = cluster.load_vm(node, vmid)
            except Exception:
                continue
            if cluster.online[node]:
                st = vm_status(cluster, vmid, conf)
                entry.update(
                    uptime=0,
                    name=st["name"],
                    status=st["status"],
                    template=st.get("template", 0),
                    maxcpu=st["cpus"],
                    cpu=0,
                    maxmem=st["maxmem"],
                    mem=0,
                    maxdisk=st["maxdisk"],
                    disk=0,
                    netin=0,
                    netout=0,
                    diskread=0,
                    diskwrite=0,
                    memhost=0,
                )
            for prop in ("lock", "tags"):
                if conf.get(prop) is not None:
                    entry[prop] = conf.get(prop)
            res.append(entry)
    if not typ or typ == "node":
        for node in cluster.nodes:
            entry = node_stats(req, node)
            entry["cgroup-mode"] = 2
            entry["host-arch"] = "x86_64"
            res.append(entry)
    if not typ or typ == "storage":
        for sid, storage in cluster.storages.items():
            if not req.can(f"/storage/{sid}", ["Datastore.Audit"]):
                continue
            for node in cluster.nodes:
                if storage.disabled or not storage.available_on(node):
                    continue
                entry = {
                    "id": f"storage/{node}/{sid}",
                    "storage": sid,
                    "node": node,
                    "type": "storage",
                    "plugintype": storage.type,
                    "status": "unknown",
                    "shared": 1 if storage.shared else 0,
                    "content": ",".join(storage.content),
                }
                if cluster.online[node]:
                    total, _avail, used = storage.status(node)
                    entry.update(maxdisk=total, disk=used, status="available")
                res.append(entry)
    if not typ and req.can("/sdn/zones/localnetwork", ["SDN.Audit"]):
        for node in cluster.nodes:
            res.append(
                {
                    "id": f"network/{node}/zone/localnetwork",
                    "type": "network",
                    "network-type": "zone",
                    "network": "localnetwork",
                    "node": node,
                    "status": "ok",
                }
            )
    return res


@route("GET", "/cluster/nextid")
async def nextid(req: Request, params: dict[str, str]) -> Any:
    cluster = req.cluster
    if params.get("vmid"):
        vmid = params["vmid"]
        if int(vmid) not in cluster.vmlist:
            return vmid
        raise param_error({"vmid": f"VM {vmid} already exists"})
    rng = cluster.config.get("next_id") or {}
    lower = int(rng.get("lower", 100))
    upper = int(rng.get("upper", 1000 * 1000))
    for i in range(lower, upper):
        if i not in cluster.vmlist:
            # Perl used the number as a hash key, so it goes out as a JSON string
            return str(i)
    raise die(f"unable to get any free VMID in range [{lower}, {upper}]")


@route("GET", "/cluster/tasks")
async def cluster_tasks(req: Request, params: dict[str, str]) -> Any:
    res = []
    for node in req.cluster.nodes:
        for task in req.tasks.cluster_list(node):
            task = split_token_user(task)
            if req.can("/", ["Sys.Audit"]) or task["user"] == req.user:
                res.append(task)
    return res


@route("GET", "/nodes")
async def nodes_index(req: Request, params: dict[str, str]) -> Any:
    from pvesim.tls import fingerprint

    fp = fingerprint(req.cluster.state_dir / "tls" / "server.pem")
    res = []
    for node in req.cluster.nodes:
        entry = node_stats(req, node)
        entry["ssl_fingerprint"] = fp
        res.append(entry)
    return res


@route("GET", "/nodes/{node}/status")
async def node_status(req: Request, params: dict[str, str]) -> Any:
    req.check(f"/nodes/{params['node']}", ["Sys.Audit"])
    node = params["node"]
    cluster = req.cluster
    mem = hostinfo.meminfo()
    rootfs = hostinfo.disk(cluster.state_dir)
    cpu, wait = hostinfo.cpu_usage()
    current_kernel, kversion = hostinfo.kernel()
    return {
        "uptime": int(time.time() - cluster.boot_time[node]),
        "idle": 0,
        "loadavg": hostinfo.loadavg(),
        "kversion": kversion,
        "current-kernel": current_kernel,
        "boot-info": {"mode": "legacy-bios"},
        "cpuinfo": hostinfo.cpuinfo(),
        "cpu": cpu,
        "wait": wait,
        "memory": {
            "free": mem["free"],
            "total": mem["total"],
            "available": mem["available"],
            "used": mem["used"],
        },
        "ksm": {"shared": 0},
        "swap": {
            "free": mem["swapfree"],
            "total": mem["swaptotal"],
            "used": mem["swaptotal"] - mem["swapfree"],
        },
        "pveversion": f"pve-manager/{PVE_VERSION}/{PVE_REPOID}",
        "rootfs": rootfs,
    }

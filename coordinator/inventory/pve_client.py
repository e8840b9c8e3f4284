"""Reading a PVE cluster's inventory through proxmoxer's https backend and an API token.

proxmoxer is synchronous (requests); callers run these functions in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from proxmoxer import AuthenticationError, ResourceException

from shared.pve_api import normalise_api_url, open_https


class PveError(Exception):
    """A PVE call failed; ``kind`` says how (unreachable, tls, auth, api)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class NodeInfo:
    name: str
    status: str
    ip_address: str


@dataclass(frozen=True)
class StorageInfo:
    node: str
    storage: str
    type: str
    content: str
    shared: bool
    active: bool
    enabled: bool
    total: int
    used: int
    avail: int


@dataclass(frozen=True)
class ClusterSnapshot:
    cluster_name: str
    pve_version: str
    nodes: list[NodeInfo]
    storages: list[StorageInfo]


def _truthy(value: object) -> bool:
    return str(value) in ("1", "True", "true")


class PveClient:
    def __init__(
        self,
        api_url: str,
        token_id: str,
        token_secret: str,
        verify: bool | str,
        timeout: float,
    ) -> None:
        self.api_url = normalise_api_url(api_url)
        self.token_id = token_id
        self._api = open_https(api_url, token_id, token_secret, verify, timeout)

    def _get(self, path: str, **params: object) -> object:
        try:
            return self._api(path).get(**params)
        except requests.exceptions.SSLError as exc:
            raise PveError(
                "tls",
                f"TLS verification of {self.api_url} failed ({_reason(exc)}); register the "
                "cluster with verify_ssl=false or add its CA to the coordinator's pve_ca_file",
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PveError(
                "unreachable", f"PVE API at {self.api_url} does not answer: {_reason(exc)}"
            ) from None
        except AuthenticationError as exc:
            raise PveError("auth", f"PVE at {self.api_url} rejected token {self.token_id}: {exc}") from None
        except ResourceException as exc:
            if exc.status_code == 401:
                raise PveError(
                    "auth",
                    f"PVE at {self.api_url} rejected API token {self.token_id} (401 {exc.status_message})",
                ) from None
            if exc.status_code == 403:
                raise PveError(
                    "auth",
                    f"API token {self.token_id} lacks the privilege to read {path} "
                    f"(403 {exc.status_message}); it needs Sys.Audit and Datastore.Audit",
                ) from None
            raise PveError("api", f"PVE GET {path} failed: {exc}") from None

    def used_vmids(self) -> set[int]:
        """Every VMID in use anywhere in the cluster (VMs and containers)."""
        entries = self._get("cluster/resources", type="vm")
        assert isinstance(entries, list)
        return {int(e["vmid"]) for e in entries if "vmid" in e}

    def snapshot(self) -> ClusterSnapshot:
        version = self._get("version")
        status = self._get("cluster/status")
        nodes_raw = self._get("nodes")
        assert isinstance(version, dict) and isinstance(status, list) and isinstance(nodes_raw, list)
        cluster_name = next((e["name"] for e in status if e.get("type") == "cluster"), None)
        ips = {e["name"]: e.get("ip", "") for e in status if e.get("type") == "node"}
        nodes = [
            NodeInfo(n["node"], n.get("status", "unknown"), ips.get(n["node"], ""))
            for n in sorted(nodes_raw, key=lambda n: n["node"])
        ]
        if cluster_name is None:  # a standalone node has no cluster entry: it is its own cluster
            cluster_name = nodes[0].name if nodes else ""
        storages: list[StorageInfo] = []
        for node in nodes:
            if node.status != "online":
                continue  # an offline node cannot answer; its rows keep their last known state
            entries = self._get(f"nodes/{node.name}/storage")
            assert isinstance(entries, list)
            for s in entries:
                storages.append(
                    StorageInfo(
                        node=node.name,
                        storage=s["storage"],
                        type=s.get("type", ""),
                        content=s.get("content", ""),
                        shared=_truthy(s.get("shared", 0)),
                        active=_truthy(s.get("active", 0)),
                        enabled=_truthy(s.get("enabled", 1)),
                        total=int(s.get("total", 0) or 0),
                        used=int(s.get("used", 0) or 0),
                        avail=int(s.get("avail", 0) or 0),
                    )
                )
        return ClusterSnapshot(cluster_name, str(version.get("version", "")), nodes, storages)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "timed out",
        "Name or service not known",
        "No route to host",
        "certificate verify failed",
        "Temporary failure",
    ):
        if marker in text:
            return marker
    return text[:200]

"""Reading a PVE cluster's inventory through proxmoxer's https backend and an API token.

proxmoxer is synchronous (requests); callers run these functions in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

import msgspec
import requests
from msgspec import Meta
from proxmoxer import AuthenticationError, ResourceException

from coordinator.errors import CoordinatorError
from shared.pve_api import normalise_api_url, open_https
from shared.pve_outage import transient_reason

T = TypeVar("T")


class PveError(CoordinatorError):
    """A PVE call failed; ``kind`` says how.

    unreachable (no connection), timeout (no answer in time), tls (certificate refused),
    auth (token refused or lacking privileges), api (PVE answered, but not as it should),
    invalid (the request could not even be made from these settings).
    """

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status  # PVE's HTTP status, when it answered

    def transient(self) -> str | None:
        """Why this will likely pass (PVE away), or None (shared/pve_outage.py)."""
        if self.kind == "unreachable":
            return transient_reason(None, self.message) or "unreachable"
        if self.kind == "timeout":
            return "timed out"
        return transient_reason(self.status, self.message) if self.kind == "api" else None


# The parts of PVE's answers that are read (other fields are ignored), no longer than their
# database columns; strict=False takes PVE's 0/1 for booleans and numbers sent as strings.
Name = Annotated[str, Meta(max_length=100)]


class _Version(msgspec.Struct):
    version: Annotated[str, Meta(max_length=50)]


class _StatusEntry(msgspec.Struct):
    type: str
    name: Name = ""
    ip: Annotated[str, Meta(max_length=64)] = ""


class _NodeEntry(msgspec.Struct):
    node: Name
    status: Annotated[str, Meta(max_length=16)] = "unknown"


class _StorageEntry(msgspec.Struct):
    storage: Name
    type: Annotated[str, Meta(max_length=32)] = ""
    content: Annotated[str, Meta(max_length=255)] = ""
    shared: bool = False
    active: bool = False
    enabled: bool = True
    total: int | None = None
    used: int | None = None
    avail: int | None = None


class _Resource(msgspec.Struct):
    vmid: int | None = None


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


class PveClient:
    def __init__(
        self,
        api_url: str,
        token_id: str,
        token_secret: str,
        verify: bool | str,
        timeout: float,
    ) -> None:
        self.token_id = token_id
        try:
            self.api_url = normalise_api_url(api_url)
            self._api = open_https(api_url, token_id, token_secret, verify, timeout)
        except ValueError as exc:  # settings saved before today's checks existed
            raise PveError("invalid", f"cannot talk to PVE with these settings: {exc}") from None

    def _get(self, path: str, shape: type[T], **params: object) -> T:
        """GET ``path`` and read the answer as ``shape``; every failure is a PveError."""
        answer = self._call(path, **params)
        try:
            return msgspec.convert(answer, shape, strict=False)
        except msgspec.ValidationError as exc:
            raise PveError("api", f"PVE at {self.api_url} answered GET {path} unexpectedly: {exc}") from None

    def _call(self, path: str, **params: object) -> object:
        try:
            return self._api(path).get(**params)
        except requests.exceptions.SSLError as exc:
            raise PveError(
                "tls",
                f"TLS verification of {self.api_url} failed ({_reason(exc)}); register the "
                "cluster with verify_ssl=false or add its CA to the coordinator's pve_ca_file",
            ) from None
        except requests.exceptions.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise PveError(
                "timeout", f"PVE API at {self.api_url} did not answer in time: {_reason(exc)}"
            ) from None
        except requests.exceptions.ConnectionError as exc:
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
            raise PveError("api", f"PVE GET {path} failed: {exc}", exc.status_code) from None
        except requests.exceptions.RequestException as exc:  # e.g. an answer that is not HTTP
            raise PveError("api", f"PVE GET {path} at {self.api_url} failed: {_reason(exc)}") from None
        except ValueError as exc:
            # http.client refuses a header it cannot send (a secret outside Latin-1, a newline):
            # the settings are wrong, whatever let them through.
            raise PveError("invalid", f"cannot send a request to PVE with these settings: {exc}") from None

    def used_vmids(self) -> set[int]:
        """Every VMID in use anywhere in the cluster (VMs and containers)."""
        entries = self._get("cluster/resources", list[_Resource], type="vm")
        return {e.vmid for e in entries if e.vmid is not None}

    def next_vmid(self) -> int:
        """PVE's next free VMID (/cluster/nextid: the lowest free one from the datacenter's
        next-id lower bound, 100 by default); it reserves nothing."""
        return self._get("cluster/nextid", int)

    def snapshot(self) -> ClusterSnapshot:
        version = self._get("version", _Version)
        status = self._get("cluster/status", list[_StatusEntry])
        nodes_raw = self._get("nodes", list[_NodeEntry])
        cluster_name = next((e.name for e in status if e.type == "cluster"), None)
        ips = {e.name: e.ip for e in status if e.type == "node"}
        nodes = [
            NodeInfo(n.node, n.status, ips.get(n.node, "")) for n in sorted(nodes_raw, key=lambda n: n.node)
        ]
        if cluster_name is None:  # a standalone node has no cluster entry: it is its own cluster
            cluster_name = nodes[0].name if nodes else ""
        storages: list[StorageInfo] = []
        for node in nodes:
            if node.status != "online":
                continue  # an offline node cannot answer; its rows keep their last known state
            for s in self._get(f"nodes/{node.name}/storage", list[_StorageEntry]):
                storages.append(
                    StorageInfo(
                        node=node.name,
                        storage=s.storage,
                        type=s.type,
                        content=s.content,
                        shared=s.shared,
                        active=s.active,
                        enabled=s.enabled,
                        total=s.total or 0,
                        used=s.used or 0,
                        avail=s.avail or 0,
                    )
                )
        return ClusterSnapshot(cluster_name, version.version, nodes, storages)


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

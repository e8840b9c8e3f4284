"""GET/POST /clusters, GET /clusters/{id}, POST /clusters/{id}/refresh."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import Meta
from sqlalchemy.exc import IntegrityError

from coordinator.api import inventory_reads
from coordinator.api.errors import ApiError, conflict, not_found
from coordinator.api.fast_json import ok
from coordinator.api.inventory_reads import ClusterOut
from coordinator.api.pagination import Page, PageQuery
from coordinator.api.routing import Call, Routes
from coordinator.appkeys import INVENTORY, READS
from coordinator.inventory.pve_client import PveError
from coordinator.inventory.refresher import ClusterExists
from shared.error_slugs import ErrorSlug
from shared.pve_api import (
    TOKEN_ID_MAX,
    TOKEN_ID_PATTERN,
    TOKEN_SECRET_PATTERN,
    check_token_secret,
    normalise_api_url,
    split_token_id,
)
from shared.validation import CheckedStr, Input

routes = Routes("inventory")


class ApiUrl(CheckedStr):
    """A PVE API address, normalised to https://host:port."""

    field = "api_url"
    json_schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": 2048,
        "description": "PVE API address: https://HOST[:PORT] (port 8006 if none), or just HOST",
        "examples": ["https://pve1.example.com:8006"],
    }

    @classmethod
    def check(cls, text: str) -> str:
        return normalise_api_url(text)


class TokenId(CheckedStr):
    """A PVE API token id, USER@REALM!TOKENNAME."""

    field = "token_id"
    json_schema = {
        "type": "string",
        "pattern": TOKEN_ID_PATTERN,
        "maxLength": TOKEN_ID_MAX,
        "description": "API token id, USER@REALM!TOKENNAME",
    }

    @classmethod
    def check(cls, text: str) -> str:
        split_token_id(text)
        return text


class TokenSecret(CheckedStr):
    """A PVE API token's secret: PVE makes every one a UUID."""

    field = "token_secret"
    json_schema = {
        "type": "string",
        "pattern": TOKEN_SECRET_PATTERN,
        "description": "API token secret, the UUID PVE showed when the token was made",
    }

    @classmethod
    def check(cls, text: str) -> str:
        return check_token_secret(text)


class ClusterIn(Input):
    api_url: ApiUrl
    token_id: TokenId
    token_secret: TokenSecret
    verify_ssl: Annotated[bool, Meta(description="verify the PVE API's TLS certificate")] = True


class ClusterUpdate(Input):
    api_url: ApiUrl | None = None
    token_id: TokenId | None = None
    token_secret: TokenSecret | None = None
    verify_ssl: bool | None = None


async def _one(call: Call, cluster_id: int) -> ClusterOut:
    row = await inventory_reads.cluster(call.app[READS], cluster_id)
    if row is None:
        raise not_found(ErrorSlug.CLUSTER_NOT_FOUND, cluster_id)
    return row


@routes.get("/clusters", role="viewer", query=PageQuery, response=Page[ClusterOut])
async def list_clusters(call: Call) -> web.Response:
    """List registered PVE clusters, newest first."""
    q: PageQuery = call.query
    total, rows = await inventory_reads.clusters(call.app[READS], q.page, q.page_size)
    return ok(Page(total=total, page=q.page, page_size=q.page_size, list=rows))


@routes.get("/clusters/{id}", role="viewer", response=ClusterOut, errors=(404,))
async def get_cluster(call: Call) -> web.Response:
    """One registered cluster."""
    return ok(await _one(call, call.path["id"]))


# Failures the caller fixes in the settings they sent; the others are on PVE's side.
_SETTINGS_REFUSED = {"auth", "tls", "invalid", "other_cluster"}


def _pve_failure(exc: PveError, settings_sent: bool) -> ApiError:
    """400 for settings PVE refused (when the caller sent them), 504 when PVE did not answer
    in time, 502 for the rest (no connection, a wrong answer)."""
    if exc.kind == "timeout":
        status = 504
    elif settings_sent and exc.kind in _SETTINGS_REFUSED:
        status = 400
    else:
        status = 502
    return ApiError(status, ErrorSlug(f"pve_{exc.kind}"), exc.message)


@routes.post("/clusters", role="admin", body=ClusterIn, response=ClusterOut, errors=(400, 409, 502, 504))
async def register_cluster(call: Call) -> ClusterOut:
    """Register a PVE cluster by API URL and API token; nodes and storages are read at once.

    Nothing is saved unless PVE answers. A rejected token or TLS certificate is a 400
    naming the cause; a PVE that cannot be reached or answers wrongly a 502, one that
    does not answer in time a 504.
    """
    body: ClusterIn = call.body
    try:
        cluster = await call.app[INVENTORY].register(
            body.api_url, body.token_id, body.token_secret, body.verify_ssl, call.actor
        )
    except PveError as exc:
        raise _pve_failure(exc, settings_sent=True) from None
    except ClusterExists as exc:
        raise conflict(
            f"cluster {exc.existing.cluster_name!r} is already registered as id {exc.existing.id}",
            ErrorSlug.CLUSTER_EXISTS,
        ) from None
    except IntegrityError:
        raise conflict(
            "this cluster was registered by a concurrent request", ErrorSlug.CLUSTER_EXISTS
        ) from None
    return await _one(call, cluster.id)


@routes.post("/clusters/{id}/refresh", role="operator", response=ClusterOut, errors=(404, 502, 504))
async def refresh_cluster(call: Call) -> ClusterOut:
    """Re-read nodes and storages of a cluster from PVE now."""
    try:
        await call.app[INVENTORY].refresh(call.path["id"])
    except LookupError:
        raise not_found(ErrorSlug.CLUSTER_NOT_FOUND, call.path["id"]) from None
    except PveError as exc:
        raise _pve_failure(exc, settings_sent=False) from None
    return await _one(call, call.path["id"])


@routes.put(
    "/clusters/{id}", role="admin", body=ClusterUpdate, response=ClusterOut, errors=(400, 404, 502, 504)
)
async def update_cluster(call: Call) -> ClusterOut:
    """Change a cluster's API URL, token or TLS check (e.g. to rotate the token).

    The new settings are tried against PVE first; nothing changes unless PVE
    accepts them and still answers as the same cluster.
    """
    body: ClusterUpdate = call.body
    changes = {name: value for name in body.__struct_fields__ if (value := getattr(body, name)) is not None}
    if not changes:
        raise ApiError(
            400, ErrorSlug.INVALID_REQUEST, "give api_url, token_id, token_secret and/or verify_ssl"
        )
    try:
        await call.app[INVENTORY].update(call.path["id"], changes, call.actor)
    except LookupError:
        raise not_found(ErrorSlug.CLUSTER_NOT_FOUND, call.path["id"]) from None
    except PveError as exc:
        raise _pve_failure(exc, settings_sent=True) from None
    return await _one(call, call.path["id"])

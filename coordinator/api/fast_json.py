"""The success envelope encoded by msgspec, for the API's hot reads.

``errors.success`` goes through ``msgspec.to_builtins`` and ``json.dumps`` (datetimes
formatted by ``timefmt.json_default``): for a page of ten sync tasks that was about a
tenth of the request's CPU. Here the struct is encoded in one pass. msgspec writes an
aware UTC datetime as ``2025-12-24T10:00:00Z`` when it has no microseconds, the API's one
format, so the data must carry whole-second UTC datetimes, as coordinator/db/fast_reads.py
gives them (tests/unit/test_fast_json.py holds the two encodings to the same text).

``ok_json`` and ``ok_page`` wrap JSON the database wrote (coordinator/db/json_select.py)
as it comes: nothing is decoded or encoded again.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_ENCODER = msgspec.json.Encoder()
_HEAD = b'{"code":200,"message":"success","data":'


def ok(data: Any) -> web.Response:
    """HTTP 200 with the contract's envelope around ``data`` (structs, whole-second UTC times)."""
    body = bytearray(_HEAD)
    _ENCODER.encode_into(data, body, len(body))
    body += b"}"
    return _response(bytes(body))


def _response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def ok_json(data: bytes) -> web.Response:
    """HTTP 200 with the envelope around ``data``, a JSON document already written."""
    return _response(b"".join((_HEAD, data, b"}")))


def ok_page(total: int, page: int, page_size: int, items: bytes) -> web.Response:
    """HTTP 200 with a pagination.Page (its fields in its order) whose list is ``items``, a
    JSON array already written."""
    head = b'{"total":%d,"page":%d,"page_size":%d,"list":' % (total, page, page_size)
    return _response(b"".join((_HEAD, head, items, b"}}")))
